#!/usr/bin/env bash
# tests/gpu/check_device_script.sh — bench/gpu/run_device.sh without a GPU: its argument
# parsing, its plan (--dry-run lists every case), its clean "no GPU" exit 3 where this
# machine has none, kiln_gpu_bench's usage and no-GPU exits, and the summary of a
# recorded run (fixture below) with the issue-20 targets. Exit 0 pass, 1 fail.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bench=${KILN_GPU_BENCH:-$root/build/kiln_gpu_bench}
s=$root/bench/gpu/run_device.sh
fails=0
check() { if eval "$2"; then echo "ok   $1"; else echo "FAIL $1"; fails=$((fails + 1)); fi; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

out=$("$s" --dry-run 2>&1); rc=$?
check "dry-run exits 0" '[ $rc -eq 0 ]'
check "dry-run plans W4A16 decode at 4096x14336" 'grep -q "w4a16-g128-asym.lua 16 4096 14336; peers cublas-f16,int4pack" <<<"$out"'
check "dry-run plans FP8 8192^3 against _scaled_mm" 'grep -q "fp8-e4m3-dynamic.lua 8192 8192 8192; peers cublas-f16,scaled_mm" <<<"$out"'
check "dry-run plans W8A8 against _int_mm" 'grep -q "w8a8-int8-dynamic.lua 8192 8192 8192; peers cublas-f16,int_mm" <<<"$out"'
check "dry-run plans the sm_90a (wgmma) pass on sm_90 devices" 'grep -q "KILN_GPU_ARCH=sm_90a" <<<"$out"'
out=$("$s" --dry-run --quick --no-torch --out "$tmp/o" 2>&1)
check "--quick --no-torch --out" 'grep -q "4096 4096 4096" <<<"$out" && grep -q "torch: no" <<<"$out" && grep -q "out: $tmp/o" <<<"$out"'
"$s" --bogus >/dev/null 2>&1; rc=$?
check "unknown argument exits 2" '[ $rc -eq 2 ]'
"$s" --out >/dev/null 2>&1; rc=$?
check "--out without a folder exits 2" '[ $rc -eq 2 ]'
if ! command -v nvidia-smi >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  out=$(OUT=$tmp/nogpu "$s" 2>&1); rc=$?
  check "no GPU: exit 3 with 'no GPU'" '[ $rc -eq 3 ] && grep -q "^no GPU" <<<"$out" && [ ! -e "$tmp/nogpu" ]'
  if [ -x "$bench" ]; then
    out=$("$bench" "$root/recipes/w4a16-g128-asym.lua" 1 64 128 2>&1); rc=$?
    check "kiln_gpu_bench: no GPU exits 3" '[ $rc -eq 3 ] && grep -q "no GPU" <<<"$out"'
  fi
else
  echo "skip the no-GPU checks: this machine has a CUDA driver"
fi
if [ -x "$bench" ]; then
  "$bench" >/dev/null 2>&1; rc=$?
  check "kiln_gpu_bench: usage exits 2" '[ $rc -eq 2 ]'
fi
# summary of a recorded run
mkdir -p "$tmp/run"
cat >"$tmp/run/kiln.jsonl" <<'J'
{"recipe": "recipes/w4a16-g128-asym.lua", "layout": "sm90-mma-f16-dequant", "device": "NVIDIA H100", "arch": "sm_90", "M": 1, "N": 14336, "K": 4096, "iters": 50, "ms": 0.02, "weight_bytes": 31195392, "gbs": 1559.8, "tflops": 5.87, "kernel": "gemv"}
{"recipe": "recipes/fp8-e4m3-dynamic.lua", "layout": "sm90-mma-fp8", "device": "NVIDIA H100", "arch": "sm_90", "M": 8192, "N": 8192, "K": 8192, "iters": 50, "ms": 2.0, "weight_bytes": 67108864, "gbs": 33.6, "tflops": 549.8, "kernel": "gemm"}
{"recipe": "recipes/fp8-e4m3-dynamic.lua", "layout": "sm90a-wgmma-fp8", "device": "NVIDIA H100", "arch": "sm_90a", "M": 8192, "N": 8192, "K": 8192, "iters": 50, "ms": 1.25, "weight_bytes": 67108864, "gbs": 53.7, "tflops": 879.6, "kernel": "gemm"}
{"recipe": "recipes/w8a8-int8-dynamic.lua", "shape": "32,4096,4096", "error": "boom"}
J
cat >"$tmp/run/peers.jsonl" <<'J'
{"peer": "hbm-copy", "device": "NVIDIA H100 80GB HBM3", "torch": "2.15.0", "gbs": 3000.0}
{"peer": "int4pack", "M": 1, "N": 14336, "K": 4096, "ms": 0.03, "tflops": 3.9}
{"peer": "scaled_mm", "M": 8192, "N": 8192, "K": 8192, "ms": 1.0, "tflops": 1099.5}
{"peer": "int_mm", "M": 32, "N": 4096, "K": 4096, "error": "self.size(0) needs to be greater than 16"}
J
echo "GPU: NVIDIA H100 (sm_90)" >"$tmp/run/correctness.log"
echo "2310 GPU runs matched the interpreter on sm_90" >>"$tmp/run/correctness.log"
printf 'GPU: NVIDIA H100 (sm_90)\nkernels planned for sm_90a (KILN_GPU_ARCH)\n2310 GPU runs matched the interpreter on sm_90a\n' >"$tmp/run/correctness-sm_90a.log"
python3 "$root/bench/gpu/peers_gpu.py" summarize "$tmp/run" >/dev/null; rc=$?
md=$(cat "$tmp/run/gpu-results.md" 2>/dev/null)
check "summarize writes gpu-results.md naming the GPU" '[ $rc -eq 0 ] && grep -q "^# kiln GPU run on NVIDIA H100 80GB HBM3" <<<"$md"'
check "summary: W4A16 share of HBM" 'grep -q "W4A16 M=1 14336x4096: 52% of HBM (target >= 80%)" <<<"$md"'
check "summary: W4A16 vs int4pack" 'grep -q "W4A16 M=1 14336x4096: 1.50x torch._weight_int4pack_mm" <<<"$md"'
check "summary: FP8 vs _scaled_mm" 'grep -q "FP8 8192^3 (sm90-mma-fp8): 50% of torch._scaled_mm (target >= 70%)" <<<"$md"'
check "summary: sm_90a wgmma FP8 row and its correctness" 'grep -q "FP8 8192^3 (sm90a-wgmma-fp8): 80% of torch._scaled_mm" <<<"$md" && grep -q "2310 GPU runs matched the interpreter on sm_90a" <<<"$md"'
check "summary: errors and correctness kept" 'grep -q "error: boom" <<<"$md" && grep -q "int_mm: self.size" <<<"$md" && grep -q "2310 GPU runs matched" <<<"$md"'
python3 "$root/bench/gpu/peers_gpu.py" >/dev/null 2>&1; rc=$?
check "peers_gpu.py usage exits 2" '[ $rc -eq 2 ]'
[ $fails -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "all device-script checks passed"
