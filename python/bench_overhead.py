"""The Python path's overhead per layer call (issue 19: <= 5 % of kernel time at M = 1):
kiln_layer_run timed from C (kiln_py_time_run) against KilnLinear's forward timed from
Python, on SmolLM2's layer shapes, interleaved, median of rounds. Two clocks: wall time,
and the calling thread's CPU time, which other processes on a busy machine do not
inflate (exact with --threads 1, where the kernel runs on the calling thread).

    python python/bench_overhead.py [RECIPE] [--threads N] [--rounds R] [--reps N] [-M ROWS]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Tuple

import torch

import kiln
from kiln._lib import ffi, lib

SHAPES = [(576, 576), (1536, 576), (576, 1536)]  # (N, K): q/o_proj, gate/up_proj, down_proj


def python_ns(mod: torch.nn.Module, x: torch.Tensor, reps: int) -> Tuple[float, float]:
    with torch.no_grad():
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        for _ in range(reps):
            mod(x)
        c1, t1 = time.thread_time_ns(), time.perf_counter_ns()
    return (t1 - t0) / reps, (c1 - c0) / reps


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
    print("| layer (N x K) | kernel | clock | C: kiln_layer_run | Python: KilnLinear | overhead |")
    print("|---|---|---|---|---|---|")
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
    # the floor any Python module pays: calling one that does nothing
    ident = torch.nn.Identity()
    x = torch.randn(1, 576)
    floor = statistics.median(python_ns(ident, x, a.reps)[1] for _ in range(a.rounds))
    print("an empty torch module call (nn.Identity): %.2f us thread CPU" % (floor / 1e3))


if __name__ == "__main__":
    main()
