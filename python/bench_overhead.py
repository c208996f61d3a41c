"""The Python path's overhead per layer call (issue 19: <= 5 % of kernel time at M = 1):
kiln_layer_run timed from C (kiln_py_time_run) against KilnLinear called as a module from
Python, on SmolLM2's layer shapes, interleaved, median of rounds. Two clocks: wall time,
and the calling thread's CPU time, which other processes on a busy machine do not
inflate (exact with --threads 1, where the kernel runs on the calling thread).

Then the parts of the overhead, thread CPU, interleaved the same way with the C kernel: the
Python loop itself (calling the builtin id), an empty module call (nn.Identity, the floor
any torch module pays), torch.empty((M, N)) from Python, KilnLinear.forward called
directly (the C forward without Module.__call__), and the module with the package's Python
forward (PyLinearBase, what runs without kiln._fast).

    python python/bench_overhead.py [RECIPE] [--threads N] [--rounds R] [--reps N] [-M ROWS]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from typing import Callable, Dict, List, Tuple

import sys

# the installed package (pip install ./python), not python/kiln beside this script, which
# has no kiln._fast unless built in place
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import torch  # noqa: E402

import kiln  # noqa: E402
from kiln._lib import ffi, lib  # noqa: E402
from kiln.linear import DIRECT_CALL, FAST_PATH_ERROR, PyLinearBase  # noqa: E402

SHAPES = [(576, 576), (1536, 576), (576, 1536)]  # (N, K): q/o_proj, gate/up_proj, down_proj


def python_ns(mod: torch.nn.Module, x: torch.Tensor, reps: int) -> Tuple[float, float]:
    with torch.no_grad():
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(reps):
            mod(x)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
    return (t1 - t0) / reps, (c1 - c0) / reps


def call_cpu_ns(f: Callable[[object], object], arg: object, reps: int) -> float:
    """Thread CPU time of one f(arg) (no_grad, as a model runs), called as a model's
    forward calls its layers: no lambda or closure between the loop and f."""
    with torch.no_grad():
        c0 = time.thread_time_ns()
        for _ in range(reps):
            f(arg)
        return (time.thread_time_ns() - c0) / reps


def parts(mod: kiln.KilnLinear, x: torch.Tensor, reps: int, rounds: int) -> Dict[str, float]:
    """Median thread CPU ns of each part of a call, and of the C kernel, interleaved
    round by round."""
    ident = torch.nn.Identity()
    shape = (x.shape[0], mod.out_features)
    runs: Dict[str, Tuple[Callable[[object], object], object]] = {
        "loop": (id, x),                 # the loop and a C call taking one argument
        "identity": (ident, x),
        "empty": (torch.empty, shape),
        "forward": (mod.forward, x),
        "module": (mod, x),
    }
    got: Dict[str, List[float]] = {k: [] for k in list(runs) + ["c", "py module"]}
    for _ in range(rounds):
        got["c"].append(c_ns(mod, x, reps)[1])
        for k, (f, arg) in runs.items():
            got[k].append(call_cpu_ns(f, arg, reps))
        mod.forward = types.MethodType(PyLinearBase.forward, mod)  # Module.__call__ finds it
        try:
            got["py module"].append(call_cpu_ns(mod, x, reps))
        finally:
            del mod.forward
    return {k: statistics.median(v) for k, v in got.items()}


def c_ns(mod: kiln.KilnLinear, x: torch.Tensor, reps: int) -> Tuple[float, float]:
    y = torch.empty(x.shape[0], mod.out_features, dtype=mod._out_dtype)
    cpu = ffi.new("double *")
    ns = lib.kiln_py_time_run(mod._layer, ffi.cast("float *", x.data_ptr()), x.shape[0],
                              ffi.cast("void *", y.data_ptr()), reps, cpu)
    if ns < 0:
        raise kiln.KilnError("kiln_layer_run failed")
    return ns, cpu[0]


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?",
                    default=os.path.join(here, "..", "recipes", "w8a8-int8-dynamic.lua"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--reps", type=int, default=3000)
    ap.add_argument("-M", type=int, default=1, help="rows per call (1: decode)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    recipe = kiln.Recipe(a.recipe)
    print("recipe %s, kiln threads %s, M = %d, median of %d interleaved rounds of %d calls"
          % (os.path.basename(a.recipe), a.threads or "default", a.M, a.rounds, a.reps))
    print("kiln from %s; KilnLinear.forward: %s" % (
        os.path.dirname(kiln.__file__),
        "kiln._fast (C), module call %s" % ("direct" if DIRECT_CALL else "Module.__call__")
        if not FAST_PATH_ERROR else "Python (%s)" % FAST_PATH_ERROR))
    print("| layer (N x K) | kernel | clock | C: kiln_layer_run | Python: KilnLinear | overhead |")
    print("|---|---|---|---|---|---|")
    mods = []
    for n, k in SHAPES:
        m = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
        kiln.quantize_(m, recipe, threads=a.threads)
        mod = m[0]
        x = torch.randn(a.M, k)
        python_ns(mod, x, 200), c_ns(mod, x, 200)  # warm
        cs, ps = [], []
        for _ in range(a.rounds):
            cs.append(c_ns(mod, x, a.reps))
            ps.append(python_ns(mod, x, a.reps))
        for i, clock in enumerate(("wall", "thread CPU")):
            c = statistics.median(v[i] for v in cs)
            p = statistics.median(v[i] for v in ps)
            print("| %d x %d | %s | %s | %.2f us | %.2f us | %+.1f %% (%.2f us) |"
                  % (n, k, mod.kernel, clock, c / 1e3, p / 1e3, 100 * (p - c) / c,
                     (p - c) / 1e3))
        mods.append((mod, x, statistics.median(v[1] for v in cs)))
    print()
    print("Parts of a call, thread CPU (us), medians of rounds interleaved with the C kernel's. "
          "overhead = KilnLinear() - C kernel; forward = KilnLinear.forward(x) - C kernel "
          "(checks, output, the call); call = KilnLinear() - KilnLinear.forward(x) "
          "(Module.__call__'s part); loop = the Python loop calling a builtin (id), which a "
          "model's own forward pays for any call; floors: an empty module call, torch.empty")
    print("| layer (N x K) | C kernel | KilnLinear() | overhead | overhead - loop | forward | call "
          "| loop | floor: nn.Identity() | floor: torch.empty((M, N)) "
          "| Python forward: KilnLinear() |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for mod, x, _ in mods:
        r = parts(mod, x, a.reps, a.rounds)
        c = r["c"]
        over = r["module"] - c
        net = over - r["loop"]
        print("| %d x %d | %.2f | %.2f | %+.3f (%+.1f %%) | %+.3f (%+.1f %%) | %+.3f | %+.3f "
              "| %.3f | %.2f | %.2f | %.2f (%+.2f, %+.0f %%) |" % (
                  mod.out_features, mod.in_features, c / 1e3, r["module"] / 1e3, over / 1e3,
                  100 * over / c, net / 1e3, 100 * net / c, (r["forward"] - c) / 1e3,
                  (r["module"] - r["forward"]) / 1e3, r["loop"] / 1e3, r["identity"] / 1e3,
                  r["empty"] / 1e3, r["py module"] / 1e3, (r["py module"] - c) / 1e3,
                  100 * (r["py module"] - c) / c))


if __name__ == "__main__":
    main()
