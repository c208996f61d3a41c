"""bench/peers/peers_torch.py — peer for bench/run_suite.sh: PyTorch CPU layers
y = x·Wᵀ (W [N, K]): nn.Linear in f32 and bf16; int8 dynamic quantization
(quantize_dynamic, the FBGEMM engine: per-tensor int8 weights, activations quantized
per call, which kiln's W8A8 dynamic does too); and the weight-only kernels
torch.ops.aten._weight_int8pack_mm (int8 per-channel weights, the peer of kiln's
W8A16) and _weight_int4pack_mm_for_cpu (int4 in groups of 128 with scales and zero
points, packed by _convert_weight_to_int4pack_for_cpu: the peer of W4A16), with bf16
activations: with f32 ones both take a slow path (torch 2.15 on Zen 4: 180-230 ms for
M=8 N=K=4096, against 4 ms in bf16), which no user would run. Prints one JSON line per
variant, like the C peers; an op this torch lacks is an "error" line.
usage: python peers_torch.py M N K THREADS REPEAT WARMUP COLD(0|1)
env:   KILN_BENCH_EVICT_BYTES, the eviction size (kiln's; 256 MiB when unset)"""
import json
import os
import statistics
import sys
import time
import warnings

VARIANTS = (("torch-f32", "f32"), ("torch-bf16", "bf16"), ("torch-int8-dyn", "int8"),
            ("torch-int8pack", "w8a16-bf16"), ("torch-int4pack", "w4a16-bf16"))


def emit(name, dtype, times=None, error=None, evict=0):
    d = {"peer": name, "dtype": dtype}
    if error is not None:
        d["error"] = str(error).replace("\n", " ")[:200]
    else:
        d.update(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                 evict_bytes=evict)
    print(json.dumps(d), flush=True)


def evict_bytes():
    v = int(os.environ.get("KILN_BENCH_EVICT_BYTES", "0") or 0)
    return v if v >= 1 << 20 else 256 << 20


def make_flush(nbytes):
    """The eviction of `kiln bench --cold`: one thread reads every 64-byte line of a
    buffer written once (numpy's strided sum reads one float per line)."""
    import numpy as np
    buf = np.ones(nbytes // 4, dtype=np.float32)
    return lambda: float(buf[::16].sum())


def linear_variants(torch, K, N, x):
    """Makers of the nn.Linear variants; each returns the call to time."""
    def f32():
        m = torch.nn.Linear(K, N, bias=False).eval()
        return lambda: m(x)

    def bf16():
        m = torch.nn.Linear(K, N, bias=False).eval().to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        return lambda: m(xb)

    def int8_dyn():
        torch.backends.quantized.engine = "fbgemm"
        q = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(K, N, bias=False)).eval(),
            {torch.nn.Linear}, dtype=torch.qint8)
        return lambda: q(x)

    return [f32, bf16, int8_dyn]


def int8pack(torch, K, N, x, dt):
    """int8 per-channel weights [N, K] with one scale per output channel."""
    op = torch.ops.aten._weight_int8pack_mm
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    scales = (torch.rand(N) * 1e-2 + 1e-3).to(dt)
    xx = x.to(dt)
    return lambda: op(xx, w, scales)


def int4pack(torch, K, N, x, dt, group=128):
    """int4 codes 0..15 in groups of `group` along K, a scale and zero point per group
    and channel ([K/group, N, 2]); packed once by torch's own CPU packer."""
    if K % group:
        raise ValueError(f"K={K} is not a multiple of the group size {group}")
    op = torch.ops.aten._weight_int4pack_mm_for_cpu
    codes = torch.randint(0, 16, (N, K), dtype=torch.int32)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
    sz = torch.stack([torch.rand(K // group, N) * 1e-2 + 1e-3,
                      torch.rand(K // group, N) * 1e-2], dim=2).to(dt).contiguous()
    xx = x.to(dt)
    return lambda: op(xx, packed, group, sz)


def main():
    warnings.filterwarnings("ignore")
    M, N, K, threads, repeat, warmup, cold = (int(v) for v in sys.argv[1:8])
    try:
        import torch
    except Exception as e:  # the suite marks torch rows n/a
        for name, dt in VARIANTS:
            emit(name, dt, error=f"import torch failed: {e}")
        return
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nbytes = evict_bytes()
    flush = make_flush(nbytes) if cold else None

    def timed(fn):
        out = []
        with torch.inference_mode():
            for i in range(warmup + repeat):
                if flush:
                    flush()
                t0 = time.perf_counter()
                fn()
                dt = (time.perf_counter() - t0) * 1e3
                if i >= warmup:
                    out.append(dt)
        return out

    x = torch.randn(M, K)
    makers = linear_variants(torch, K, N, x) + [
        lambda: int8pack(torch, K, N, x, torch.bfloat16),
        lambda: int4pack(torch, K, N, x, torch.bfloat16)]
    for (name, dtype), make in zip(VARIANTS, makers):
        try:
            emit(name, dtype, timed(make()), evict=nbytes if cold else 0)
        except Exception as e:  # a missing op or an unsupported shape
            emit(name, dtype, error=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    main()
