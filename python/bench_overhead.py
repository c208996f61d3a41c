"""The Python path's overhead per layer call (issue 19: <= 5 % of kernel time at M = 1):
kiln_layer_run timed from C (kiln_py_time_run) against KilnLinear.forward timed from
Python, on SmolLM2's layer shapes, interleaved, median of rounds.

    python python/bench_overhead.py [RECIPE] [--threads N] [--rounds R]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import kiln
from kiln._lib import ffi, lib

SHAPES = [(576, 576), (1536, 576), (576, 1536)]  # (N, K): q/o_proj, gate/up_proj, down_proj


def python_ns(mod: torch.nn.Module, x: torch.Tensor, reps: int) -> float:
    with torch.no_grad():
        t0 = time.perf_counter_ns()
        for _ in range(reps):
            mod(x)
        return (time.perf_counter_ns() - t0) / reps


def c_ns(mod: kiln.KilnLinear, x: torch.Tensor, reps: int) -> float:
    y = torch.empty(1, mod.out_features, dtype=mod._out_dtype)
    ns = lib.kiln_py_time_run(mod._layer, ffi.cast("float *", x.data_ptr()), 1,
                              ffi.cast("void *", y.data_ptr()), reps)
    if ns < 0:
        raise kiln.KilnError("kiln_layer_run failed")
    return ns


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?",
                    default=os.path.join(here, "..", "recipes", "w8a8-int8-dynamic.lua"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=2000)
    a = ap.parse_args()
    torch.set_num_threads(1)
    recipe = kiln.Recipe(a.recipe)
    print("recipe %s, kiln threads %s, M = 1, median of %d interleaved rounds of %d calls"
          % (os.path.basename(a.recipe), a.threads or "default", a.rounds, a.reps))
    print("| layer (N x K) | kernel | C: kiln_layer_run | Python: KilnLinear | overhead |")
    print("|---|---|---|---|---|")
    for n, k in SHAPES:
        m = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
        kiln.quantize_(m, recipe, threads=a.threads)
        mod = m[0]
        x = torch.randn(1, k)
        python_ns(mod, x, 200), c_ns(mod, x, 200)  # warm
        cs, ps = [], []
        for _ in range(a.rounds):
            cs.append(c_ns(mod, x, a.reps))
            ps.append(python_ns(mod, x, a.reps))
        c, p = statistics.median(cs), statistics.median(ps)
        print("| %d x %d | %s | %.2f us | %.2f us | %+.1f %% (%.2f us) |"
              % (n, k, mod.kernel, c / 1e3, p / 1e3, 100 * (p - c) / c, (p - c) / 1e3))


if __name__ == "__main__":
    main()
