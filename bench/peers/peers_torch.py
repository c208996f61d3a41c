"""bench/peers/peers_torch.py — peer for bench/run_suite.sh: PyTorch CPU Linear layers
y = x·Wᵀ (W [N, K]): f32, bf16, and int8 dynamic quantization (quantize_dynamic, the
FBGEMM engine: per-tensor int8 weights, activations quantized per call, which kiln's
W8A8 dynamic does too). Prints one JSON line per variant, like the C peers.
usage: python peers_torch.py M N K THREADS REPEAT WARMUP COLD(0|1)"""
import json
import warnings
import statistics
import sys
import time


def emit(name, dtype, times=None, error=None):
    d = {"peer": name, "dtype": dtype}
    if error is not None:
        d["error"] = str(error)[:200]
    else:
        d.update(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times))
    print(json.dumps(d), flush=True)


def main():
    warnings.filterwarnings("ignore")
    M, N, K, threads, repeat, warmup, cold = (int(v) for v in sys.argv[1:8])
    try:
        import torch
    except Exception as e:  # the suite marks torch rows n/a
        for name, dt in (("torch-f32", "f32"), ("torch-bf16", "bf16"), ("torch-int8-dyn", "int8")):
            emit(name, dt, error=f"import torch failed: {e}")
        return
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    flush = torch.ones(64 << 20)  # 256 MiB, as kiln bench --cold

    def timed(fn):
        out = []
        with torch.inference_mode():
            for i in range(warmup + repeat):
                if cold:
                    flush.add_(1.0)
                t0 = time.perf_counter()
                fn()
                dt = (time.perf_counter() - t0) * 1e3
                if i >= warmup:
                    out.append(dt)
        return out

    lin = torch.nn.Linear(K, N, bias=False).eval()
    x = torch.randn(M, K)
    variants = []
    variants.append(("torch-f32", "f32", lambda: (lin, x)))

    def bf16():
        m = torch.nn.Linear(K, N, bias=False).eval().to(torch.bfloat16)
        return m, x.to(torch.bfloat16)

    variants.append(("torch-bf16", "bf16", bf16))

    def int8():
        torch.backends.quantized.engine = "fbgemm"
        q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(K, N, bias=False)).eval(),
            {torch.nn.Linear}, dtype=torch.qint8)
        return q, x

    variants.append(("torch-int8-dyn", "int8", int8))
    for name, dt, make in variants:
        try:
            m, xx = make()
            emit(name, dt, timed(lambda: m(xx)))
        except Exception as e:
            emit(name, dt, error=e)


if __name__ == "__main__":
    main()
