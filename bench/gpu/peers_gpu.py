"""bench/gpu/peers_gpu.py — the PyTorch side of bench/gpu/run_device.sh (docs/gpu.md,
"The device script").

  peers_gpu.py peers CASES.json        one JSON line per (case, peer) on stdout: HBM copy
                                       bandwidth, cuBLAS f16 (torch.matmul), torch._scaled_mm
                                       (FP8 e4m3), torch._int_mm (int8), and
                                       torch._weight_int4pack_mm (W4A16, groups of 128)
  peers_gpu.py summarize DIR           DIR/kiln.jsonl + DIR/peers.jsonl + DIR/correctness.log
                                       -> DIR/gpu-results.md (the issue-20 targets checked)
  peers_gpu.py cases [--quick]         the cases run_device.sh times, as JSON

A case is {"recipe", "M", "N", "K", "peers": [...]}; y = x[M,K] · W[N,K]ᵀ throughout.
A peer that this torch lacks, or that fails, is an "error" line, never a crash. Exit 0;
2 usage; 3 "no GPU" (torch without CUDA); 4 torch missing."""
import json
import os
import sys

W4 = "recipes/w4a16-g128-asym.lua"
FP8 = "recipes/fp8-e4m3-dynamic.lua"
W8A8 = "recipes/w8a8-int8-dynamic.lua"


def cases(quick):
    out = []
    decode_m = (1, 16) if quick else (1, 4, 8, 16)
    for m in decode_m:  # W4A16 decode, 4096x14336 class (both projections)
        for n, k in ((14336, 4096), (4096, 14336)):
            out.append({"recipe": W4, "M": m, "N": n, "K": k, "peers": ["cublas-f16", "int4pack"]})
    big = 4096 if quick else 8192
    out.append({"recipe": FP8, "M": big, "N": big, "K": big, "peers": ["cublas-f16", "scaled_mm"]})
    out.append({"recipe": W8A8, "M": big, "N": big, "K": big, "peers": ["cublas-f16", "int_mm"]})
    out.append({"recipe": W8A8, "M": 32, "N": 4096, "K": 4096, "peers": ["int_mm"]})
    if not quick:
        out.append({"recipe": "recipes/w8a16.lua", "M": 1, "N": 4096, "K": 4096, "peers": ["cublas-f16"]})
        out.append({"recipe": "recipes/f32.lua", "M": 1, "N": 4096, "K": 4096, "peers": []})
    return out


def timed(torch, fn, iters=50):
    """Median of 3 runs of `iters` back-to-back calls, ms per call (CUDA events)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(3):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(iters):
            fn()
        b.record()
        torch.cuda.synchronize()
        runs.append(a.elapsed_time(b) / iters)
    return sorted(runs)[1]


def hbm_gbs(torch):
    """Device copy of 1 GiB: bytes read + written per second."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = timed(torch, lambda: dst.copy_(src), iters=20)
    return 2 * n / (ms * 1e6)


def peer_fn(torch, peer, M, N, K):
    dev = "cuda"
    if peer == "cublas-f16":
        a = torch.randn(M, K, device=dev, dtype=torch.float16)
        w = torch.randn(N, K, device=dev, dtype=torch.float16)
        return lambda: torch.matmul(a, w.t())
    if peer == "scaled_mm":
        a = torch.randn(M, K, device=dev).to(torch.float8_e4m3fn)
        w = torch.randn(N, K, device=dev).to(torch.float8_e4m3fn)
        one = torch.tensor(1.0, device=dev)
        return lambda: torch._scaled_mm(a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    if peer == "int_mm":
        a = torch.randint(-128, 127, (M, K), device=dev, dtype=torch.int8)
        w = torch.randint(-128, 127, (N, K), device=dev, dtype=torch.int8)
        return lambda: torch._int_mm(a, w.t())
    if peer == "int4pack":
        g = 128
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        q = torch.randint(0, 256, (N, K // 2), device=dev, dtype=torch.uint8)
        wp = torch.ops.aten._convert_weight_to_int4pack(q, 8)
        sz = torch.ones(K // g, N, 2, device=dev, dtype=torch.bfloat16)
        return lambda: torch.ops.aten._weight_int4pack_mm(x, wp, g, sz)
    raise ValueError("unknown peer " + peer)


def run_peers(path):
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"peer": "torch", "error": "torch not installed: %s" % e}), flush=True)
        return 4
    if not torch.cuda.is_available():
        print(json.dumps({"peer": "torch", "error": "no GPU: torch.cuda.is_available() is False"}), flush=True)
        return 3
    print(json.dumps({"peer": "hbm-copy", "device": torch.cuda.get_device_name(0),
                      "torch": torch.__version__, "gbs": hbm_gbs(torch)}), flush=True)
    with open(path) as f:
        todo = json.load(f)
    for c in todo:
        M, N, K = c["M"], c["N"], c["K"]
        for p in c["peers"]:
            d = {"peer": p, "M": M, "N": N, "K": K}
            try:
                d["ms"] = timed(torch, peer_fn(torch, p, M, N, K))
                d["tflops"] = 2.0 * M * N * K / (d["ms"] * 1e9)
            except Exception as e:  # a peer this torch lacks or refuses: recorded, not fatal
                d["error"] = str(e).replace("\n", " ")[:300]
            print(json.dumps(d), flush=True)
    return 0


def load_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def summarize(d):
    kiln = load_jsonl(os.path.join(d, "kiln.jsonl"))
    peers = load_jsonl(os.path.join(d, "peers.jsonl"))
    hbm = next((p for p in peers if p.get("peer") == "hbm-copy"), {})
    dev = hbm.get("device") or next((k.get("device") for k in kiln if k.get("device")), "unknown GPU")
    lines = ["# kiln GPU run on %s" % dev, "",
             "Written by bench/gpu/run_device.sh (docs/gpu.md, \"The device script\"). kiln: kernel time",
             "of one call (x resident, range/prep/gemv|gemm), cubin for the device's arch; peers: torch %s,"
             % hbm.get("torch", "(absent)"),
             "CUDA events; HBM: 1 GiB device copy, read + write: %s GB/s." % (
                 "%.0f" % hbm["gbs"] if "gbs" in hbm else "n/a"), ""]
    for log, what in (("correctness.log", ""), ("correctness-sm_90a.log", ", sm_90a wgmma kernels")):
        corr = os.path.join(d, log)
        if not os.path.exists(corr):
            continue
        with open(corr) as f:
            text = f.read()
        got = [l for l in text.splitlines() if "matched the interpreter" in l or "FAILED" in l or "SKIP" in l]
        lines += ["## Every recipe against the interpreter (test_cuda_runtime%s)" % what, ""] + \
                 ["    " + l for l in got[:20]] + [""]
    lines += ["## Timings", "", "| recipe | M×N×K | kiln layout | kernel | kiln ms | GB/s | TFLOP/s | peers (ms) |",
              "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for k in kiln:
        if "ms" not in k:
            lines.append("| %s | %s | error: %s | | | | | |" % (k.get("recipe"), k.get("shape", ""), k.get("error", "?")))
            continue
        same = [p for p in peers if (p.get("M"), p.get("N"), p.get("K")) == (k["M"], k["N"], k["K"])]
        ptxt = ", ".join("%s %s" % (p["peer"], "%.4f" % p["ms"] if "ms" in p else "error")
                         for p in same)
        lines.append("| %s | %d×%d×%d | %s | %s | %.4f | %.0f | %.1f | %s |" % (
            os.path.basename(k["recipe"]), k["M"], k["N"], k["K"], k["layout"], k.get("kernel", ""),
            k["ms"], k["gbs"], k["tflops"], ptxt))
        ref = {p["peer"]: p["ms"] for p in same if "ms" in p}
        name = os.path.basename(k["recipe"])
        if name.startswith("w4a16") and k["M"] <= 16:
            if "gbs" in hbm:
                verdicts.append("W4A16 M=%d %dx%d: %.0f%% of HBM (target >= 80%%)" % (
                    k["M"], k["N"], k["K"], 100.0 * k["gbs"] / hbm["gbs"]))
            if "int4pack" in ref:
                verdicts.append("W4A16 M=%d %dx%d: %.2fx torch._weight_int4pack_mm (target >= 1)" % (
                    k["M"], k["N"], k["K"], ref["int4pack"] / k["ms"]))
        if name.startswith("fp8") and "scaled_mm" in ref:
            verdicts.append("FP8 %d^3 (%s): %.0f%% of torch._scaled_mm (target >= 70%%)" % (
                k["M"], k["layout"], 100.0 * ref["scaled_mm"] / k["ms"]))
        if name.startswith("w8a8") and "int_mm" in ref:
            verdicts.append("W8A8 %dx%dx%d (%s): %.2fx torch._int_mm (target >= 1)" % (
                k["M"], k["N"], k["K"], k["layout"], ref["int_mm"] / k["ms"]))
    errs = [p for p in peers if "error" in p]
    lines += ["", "## Issue 20 targets", ""] + ["- " + v for v in verdicts] + [""]
    if errs:
        lines += ["## Peer errors", ""] + ["- %s: %s" % (p.get("peer"), p["error"]) for p in errs] + [""]
    with open(os.path.join(d, "gpu-results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))
    return 0


def main(argv):
    if len(argv) >= 2 and argv[1] == "cases" and argv[2:] in ([], ["--quick"]):
        print(json.dumps(cases(argv[2:] == ["--quick"])))
        return 0
    if len(argv) == 3 and argv[1] == "peers":
        return run_peers(argv[2])
    if len(argv) == 3 and argv[1] == "summarize":
        return summarize(argv[2])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
