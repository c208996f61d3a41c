"""bench/peers/peers_openvino.py — peer for bench/run_suite.sh: OpenVINO's CPU plugin on
y[M,N] = x[M,K]·W[N,K]ᵀ with weights compressed the way OpenVINO's own LLM exports store
them: a u4 (groups of 128 along K) or u8 (per output channel) Constant, a zero point of
the same type, Convert → Subtract → Multiply by f16 scales → Reshape [N, K], then MatMul
(transpose_b) against an f32 Parameter x. The plugin fuses that chain into one
FullyConnected that reads the compressed weights; the row says whether it did ("fused",
from the compiled model's runtime graph), which inference precision and dynamic
activation quantization ran, and checks the result once against numpy's x @ dequant(W)ᵀ.
Variants: openvino-u4g128 (peer of W4A16, or W4A8 when activations are quantized),
openvino-u8 (peer of W8A16 / W8A8). One JSON line per variant, like the other peers; an
"error" line when openvino is missing, the shape does not fit, or the check fails.
usage: python peers_openvino.py M N K THREADS REPEAT WARMUP COLD(0|1)
env:   KILN_BENCH_EVICT_BYTES, the eviction size (kiln's; 256 MiB when unset);
       KILN_OV_INFERENCE_PRECISION (f32, bf16 or f16): INFERENCE_PRECISION_HINT, else
       the plugin's default for this CPU (bf16 where the CPU has AVX512-BF16 or AMX)"""
import json
import os
import statistics
import sys
import time

# The cold-cache eviction is the torch peer's, unchanged (same size rule, same loop).
from peers_torch import evict_bytes, make_flush

GROUP = 128
VARIANTS = (("openvino-u4g128", "u4"), ("openvino-u8", "u8"))
# Families of kiln recipes (bench/summarize.py's LIKE_FOR_LIKE keys) each variant
# computes like, by whether the plugin quantized the activations.
PEER_OF = {("u4", False): "w4a16", ("u4", True): "w4a8",
           ("u8", False): "w8a16", ("u8", True): "w8a8"}
# Unit roundoff of the activations' and the output's format, by inference precision.
UNIT = {"f32": 0.0, "bf16": 2.0 ** -8, "f16": 2.0 ** -11}


def emit(name, dtype, error=None, **fields):
    d = {"peer": name, "dtype": dtype}
    if error is not None:
        d["error"] = str(error).replace("\n", " ")[:240]
    d.update(fields)
    print(json.dumps(d), flush=True)


def make_weights(np, kind, N, K, seed):
    """Codes, zero points and f16 scales shaped as the model's Constants: u4 [N, K/128,
    128] with one zero point and scale per group, u8 [N, K] with one per row."""
    rng = np.random.default_rng(seed)
    if kind == "u4":
        if K % GROUP:
            raise ValueError(f"K={K} is not a multiple of the u4 group size {GROUP}")
        shape, zshape, top = (N, K // GROUP, GROUP), (N, K // GROUP, 1), 16
    else:
        shape, zshape, top = (N, K), (N, 1), 256
    codes = rng.integers(0, top, shape, dtype=np.uint8)
    zeros = rng.integers(0, top, zshape, dtype=np.uint8)
    # Scales ~ 1/(levels·√K), so y is of order |x| as in a real layer.
    scales = ((rng.random(zshape) + 0.5) * (4.0 / (top * K ** 0.5))).astype(np.float16)
    return codes, zeros, scales


def build_model(ov, ops, np, kind, M, N, K, w):
    codes, zeros, scales = w
    t = ov.Type.u4 if kind == "u4" else ov.Type.u8
    x = ops.parameter([M, K], ov.Type.f32, name="x")
    wq = ops.convert(ops.constant(codes, t), ov.Type.f16)
    zq = ops.convert(ops.constant(zeros, t), ov.Type.f16)
    deq = ops.multiply(ops.subtract(wq, zq), ops.constant(scales))
    deq = ops.reshape(deq, ops.constant(np.array([N, K], dtype=np.int64)), False)
    y = ops.matmul(x, ops.convert(deq, ov.Type.f32), False, True)
    return ov.Model([y], [x], f"kiln-peer-{kind}")


def compile_props(threads, dyn_quant=None):
    props = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
             "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": True}
    prec = os.environ.get("KILN_OV_INFERENCE_PRECISION")
    if prec:
        props["INFERENCE_PRECISION_HINT"] = prec
    if dyn_quant is not None:
        props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = dyn_quant
    return props


def precision_name(t):
    s = str(t)  # "<Type: 'bfloat16'>" and the like
    for key, name in (("bfloat16", "bf16"), ("float16", "f16"), ("float32", "f32")):
        if key in s:
            return name
    return s


def fc_layers(compiled):
    """The runtime graph's FullyConnected layers with their weight input types."""
    out, kinds = [], set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        kinds.add(layer)
        if layer == "FullyConnected":
            ins = {str(op.get_input_element_type(i)) for i in range(op.get_input_size())}
            out.append({"primitive": info["primitiveType"].astype(str), "inputs": ins})
    return out, kinds


def fusion(compiled, kind):
    """(fused, FullyConnected primitive): fused when exactly one FullyConnected reads the
    weights as u4/u8 and no decompression op (Eltwise, Subtract, Multiply, Convert) is
    left in the runtime graph; a constant-folded f32/bf16 weight does not count."""
    fcs, kinds = fc_layers(compiled)
    want = "uint4_t" if kind == "u4" else "uint8_t"
    leftover = kinds & {"Eltwise", "Subtract", "Multiply", "Convert", "MatMul"}
    ok = len(fcs) == 1 and any(want in t for t in fcs[0]["inputs"]) and not leftover
    return ok, fcs[0]["primitive"] if fcs else "none: " + ",".join(sorted(kinds))


def run_once(np, request, x):
    request.get_input_tensor().data[:] = x
    request.infer()
    return np.array(request.get_output_tensor().data, dtype=np.float64)


def reference(np, w, x64, N, K):
    """numpy's x @ dequant(W)ᵀ in f64, Σ_k |x_k|·|deqW[n,k]| and Σ_k |deqW[n,k]|, 2048
    rows of W at a time (a 14336×4096 f64 copy would be 470 MB)."""
    codes, zeros, scales = w
    ref = np.empty((x64.shape[0], N))
    mag = np.empty_like(ref)
    wsum = np.empty(N)
    for n0 in range(0, N, 2048):
        n1 = min(N, n0 + 2048)
        d = (codes[n0:n1].astype(np.float64) - zeros[n0:n1]) * scales[n0:n1].astype(np.float64)
        d = np.abs(d.reshape(n1 - n0, K)), d.reshape(n1 - n0, K)
        ref[:, n0:n1] = x64 @ d[1].T
        mag[:, n0:n1] = np.abs(x64) @ d[0].T
        wsum[n0:n1] = d[0].sum(axis=1)
    return ref, mag, wsum


def error_bound(np, x64, ref, mag, wsum, K, prec, dq_applied):
    """|y − ref| allowed per element: each activation's rounding to the inference
    precision (u·|x_k|); with dynamic quantization half an int8 step of the row's absmax
    (absmax/254 for a symmetric step absmax/127, or (max−min)/510 for an asymmetric one;
    a group's absmax is at most the row's); f16 products of the decompression (2⁻¹⁰);
    f32 sums in any order (4·K·2⁻²⁴, docs/numerics.md); one rounding of the output to
    the inference precision (u·|y|)."""
    u = UNIT.get(prec, 2.0 ** -8)
    bound = (u + 2.0 ** -10 + 4 * K * 2.0 ** -24) * mag + u * np.abs(ref)
    if dq_applied:
        bound += np.abs(x64).max(axis=1, keepdims=True) / 254.0 * wsum[None, :]
    return bound


def dyn_quant_applied(np, core, model, threads, x, y, group):
    """Whether the plugin quantized the activations: the same model compiled with
    DYNAMIC_QUANTIZATION_GROUP_SIZE = 0 (off) gives other bits exactly when it did."""
    if not group:
        return False
    twin = core.compile_model(model, "CPU", compile_props(threads, dyn_quant=0))
    return not np.array_equal(run_once(np, twin.create_infer_request(), x), y)


def thread_cpu_ns():
    """{thread id: ns it has run} for this process, from /proc's schedstat ({} elsewhere)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def timed(request, repeat, warmup, flush):
    """warmup + repeat runs (each after an eviction when cold): the timed runs' ms and
    how many threads worked in them (those that ran at least a quarter as long as the
    busiest, from /proc outside the timed region; 0 when /proc cannot say)."""
    ms, busy = [], {}
    for i in range(warmup + repeat):
        if flush:
            flush()
        before = thread_cpu_ns()
        t0 = time.perf_counter()
        request.infer()
        t1 = time.perf_counter()
        if i >= warmup:
            ms.append((t1 - t0) * 1e3)
            for tid, ns in thread_cpu_ns().items():
                busy[tid] = busy.get(tid, 0) + ns - before.get(tid, 0)
    top = max(busy.values(), default=0)
    return ms, sum(1 for ns in busy.values() if top and ns >= top / 4)


def bench_variant(env, name, kind, a):
    """Builds, compiles, checks the fusion, times and verifies one variant; one line."""
    ov, ops, np, core = env
    M, N, K, threads = a["M"], a["N"], a["K"], a["threads"]
    w = make_weights(np, kind, N, K, seed=N * 31 + K)
    model = build_model(ov, ops, np, kind, M, N, K, w)
    t0 = time.perf_counter()
    compiled = core.compile_model(model, "CPU", compile_props(threads))
    compile_ms = (time.perf_counter() - t0) * 1e3
    fused, primitive = fusion(compiled, kind)
    prec = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    group = int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    info = {"fused": fused, "fc_primitive": primitive, "inference_precision": prec,
            "dyn_quant_group_size": group,
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "pinning": bool(compiled.get_property("ENABLE_CPU_PINNING")),
            "compile_ms": round(compile_ms, 1), "openvino": ov.__version__.split("-")[0]}
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)
    request.get_input_tensor().data[:] = x
    ms, busy = timed(request, a["repeat"], a["warmup"], a["flush"])
    y = run_once(np, request, x)
    applied = dyn_quant_applied(np, core, model, threads, x, y, group)
    wname = "w4" if kind == "u4" else "w8"
    dtype = (f"{wname}a8-dyn-g{group}" if applied else
             f"{wname}-f32" if prec == "f32" else f"{wname}a16-{prec}")
    info.update(dyn_quant_applied=applied, peer_of=PEER_OF[(kind, applied)])
    x64 = x.astype(np.float64)
    ref, mag, wsum = reference(np, w, x64, N, K)
    err = np.abs(y - ref)
    frac = float((err / np.maximum(error_bound(np, x64, ref, mag, wsum, K, prec, applied),
                                   1e-300)).max())
    info.update(max_abs_err=float(err.max()), max_abs_ref=float(np.abs(ref).max()),
                err_over_bound=round(frac, 4))
    if frac > 1.0:
        emit(name, dtype, error=f"result off numpy's x @ dequant(W).T: max |err| "
             f"{err.max():.4g} is {frac:.3g}x the bound (M={M} N={N} K={K})", **info)
        return
    emit(name, dtype, median_ms=statistics.median(ms), min_ms=min(ms), max_ms=max(ms),
         evict_bytes=a["evict"], busy_threads=busy, **info)


def parse_args(argv):
    names = ("M", "N", "K", "threads", "repeat", "warmup", "cold")
    try:
        vals = [int(v) for v in argv]
    except ValueError:
        vals = []
    if len(vals) != 7 or min(vals[:5]) < 1 or vals[5] < 0 or vals[6] not in (0, 1):
        sys.stderr.write(next(l for l in __doc__.splitlines() if l.startswith("usage:")) + "\n")
        sys.stderr.write(f"peers_openvino: bad arguments {argv}: M N K THREADS REPEAT "
                         "need >= 1, WARMUP >= 0, COLD 0 or 1\n")
        return None
    return dict(zip(names, vals))


def main():
    a = parse_args(sys.argv[1:])
    if a is None:
        return 2
    try:
        import numpy as np
        import openvino as ov
        from openvino import opset13 as ops
        core = ov.Core()
    except Exception as e:  # the suite marks the openvino rows n/a
        for name, _ in VARIANTS:
            emit(name, "-", error=f"import openvino failed: {type(e).__name__}: {e}")
        return 0
    a["evict"] = evict_bytes() if a["cold"] else 0
    a["flush"] = make_flush(a["evict"]) if a["cold"] else None
    for name, kind in VARIANTS:
        try:
            bench_variant((ov, ops, np, core), name, kind, a)
        except Exception as e:  # an unsupported shape or a plugin refusal
            emit(name, "-", error=f"{type(e).__name__}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
