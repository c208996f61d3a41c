#!/usr/bin/env bash
# bench/gpu/run_device.sh — the issue-20 device run, one script for a lent GPU (docs/gpu.md,
# "The device script"): every recipe's kernels against the interpreter (test_cuda_runtime:
# M in {1, 3, 7, 16, 67, 128, 130, 4096}, N off the tile, K = 200 off the k-slice and the
# groups), then kernel timings of kiln (bench/gpu/kiln_gpu_bench) and of the PyTorch peers
# (cuBLAS f16, torch._scaled_mm, torch._int_mm, torch._weight_int4pack_mm, HBM copy) on the
# same shapes, summarized with the issue's targets. On an sm_90 device (H100, H200) the
# correctness run and the FP8 / W8A8 / W8A16 timings are repeated with KILN_GPU_ARCH=sm_90a:
# the arch-specific wgmma kernels (correctness-sm_90a.log; kiln.jsonl rows with layout
# sm90a-*), beside the portable sm_90 ones.
#
#   run_device.sh [--out DIR] [--build DIR] [--quick] [--no-torch] [--dry-run]
#
#   --out DIR     results folder (default $OUT when set, else bench/results/gpu-run):
#                 correctness.log, kiln.jsonl, peers.jsonl, gpu-results.md, env.txt
#   --build DIR   a kiln build with test_cuda_runtime and kiln_gpu_bench (default build;
#                 else .device/kiln-device.tar.xz from pack_for_device.sh is unpacked,
#                 else they are built there: needs cmake, ninja, LLVM 16, Lua 5.4, cmocka)
#   --quick       fewer shapes (W4A16 M 1, 16; 4096^3 for FP8/W8A8)
#   --no-torch    kiln only
#   --dry-run     print the plan (cases, commands) and exit 0, GPU or not
# Python with torch: $KILN_TORCH_PYTHON (default python3). Exit 0 done (a failed check is
# in the results, and the exit is 1); 1 correctness failed; 2 usage or build failure;
# 3 "no GPU".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$root/bench/results/gpu-run}
build=$root/build
quick=
torch=1
dry=
py=${KILN_TORCH_PYTHON:-python3}

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    --build) [ $# -ge 2 ] || usage; build=$2; shift 2 ;;
    --quick) quick=--quick; shift ;;
    --no-torch) torch=; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage ;;
    *) echo "run_device.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

cases=$(python3 "$root/bench/gpu/peers_gpu.py" cases $quick) || { echo "run_device.sh: cannot list the cases" >&2; exit 2; }
if [ -n "$dry" ]; then
  echo "out: $out"; echo "build: $build"; if [ -n "$torch" ]; then echo "torch: $py"; else echo "torch: no"; fi
  echo "correctness: $build/test_cuda_runtime"
  echo "sm_90 device: again with KILN_GPU_ARCH=sm_90a (test_cuda_runtime; kiln_gpu_bench of the fp8, w8a8 and w8a16 cases)"
  python3 -c 'import json,sys; [print("kiln_gpu_bench %s %d %d %d; peers %s" % (c["recipe"], c["M"], c["N"], c["K"], ",".join(c["peers"]) or "-")) for c in json.loads(sys.argv[1])]' "$cases"
  exit 0
fi

# Is there a GPU? The driver library and a device, before building anything.
gpu=
if command -v nvidia-smi >/dev/null 2>&1; then gpu=$(nvidia-smi -L 2>/dev/null | head -n1); fi
if [ -z "$gpu" ] && ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  echo "no GPU: neither nvidia-smi lists a device nor is libcuda.so.1 installed"
  exit 3
fi

mkdir -p "$out" || exit 2
bundle=$root/.device/kiln-device.tar.xz # bench/gpu/pack_for_device.sh, for an image without LLVM 16
if { [ ! -x "$build/test_cuda_runtime" ] || [ ! -x "$build/kiln_gpu_bench" ]; } && [ -f "$bundle" ]; then
  echo "unpacking $bundle"
  u=$(mktemp -d) && tar -C "$u" -xJf "$bundle" || { echo "run_device.sh: cannot unpack $bundle"; exit 2; }
  build=$u/bin
  export LD_LIBRARY_PATH=$u/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  src=$(cat "$u/source_dir") # the binaries read recipes from the folder they were built in
  if [ "$src" != "$root" ] && [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$root" "$src"; fi
fi
if [ ! -x "$build/test_cuda_runtime" ] || [ ! -x "$build/kiln_gpu_bench" ]; then
  echo "building kiln in $build"
  { cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
    cmake --build "$build" -j"$(nproc)" --target test_cuda_runtime kiln_gpu_bench; } >"$out/build.log" 2>&1 ||
    { echo "run_device.sh: build failed (see $out/build.log)"; tail -5 "$out/build.log"; exit 2; }
fi
{ echo "date: $(date -u +%FT%TZ)"; echo "gpu: ${gpu:-?}"; nvidia-smi 2>/dev/null | head -15
  echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null)"; } >"$out/env.txt"

status=0
echo "== correctness: test_cuda_runtime"
(cd "$build" && ./test_cuda_runtime) >"$out/correctness.log" 2>&1 || status=1
grep -E "GPU:|matched the interpreter|FAILED|SKIP" "$out/correctness.log" | head -20
if grep -q "SKIP: no CUDA" "$out/correctness.log"; then
  echo "no GPU: test_cuda_runtime found no CUDA driver"; exit 3
fi
# Hopper: the arch-specific wgmma kernels too (their cubin runs on sm_90 only)
wgmma=
if grep -q "^GPU: .*(sm_90)$" "$out/correctness.log"; then
  wgmma=sm_90a
  echo "== correctness: test_cuda_runtime, KILN_GPU_ARCH=$wgmma"
  (cd "$build" && KILN_GPU_ARCH=$wgmma ./test_cuda_runtime) >"$out/correctness-$wgmma.log" 2>&1 || status=1
  grep -E "GPU:|planned for|matched the interpreter|FAILED" "$out/correctness-$wgmma.log" | head -20
fi

echo "== kiln timings"
: >"$out/kiln.jsonl"
echo "$cases" >"$out/cases.json"
python3 -c 'import json,sys; [print(c["recipe"], c["M"], c["N"], c["K"]) for c in json.load(open(sys.argv[1]))]' \
  "$out/cases.json" | while read -r r m n k; do
  line=$("$build/kiln_gpu_bench" "$root/$r" "$m" "$n" "$k" 2>&1)
  rc=$?
  if [ $rc -eq 3 ]; then echo "no GPU: $line"; exit 3; fi
  [ $rc -eq 0 ] || line=$(python3 -c 'import json,sys; print(json.dumps({"recipe": sys.argv[1], "shape": sys.argv[2], "error": sys.argv[3]}))' "$r" "$m,$n,$k" "$line")
  echo "$line" | tee -a "$out/kiln.jsonl"
  case $r in
    *fp8*|*w8a8*|*w8a16*) [ -z "$wgmma" ] && continue
      line=$(KILN_GPU_ARCH=$wgmma "$build/kiln_gpu_bench" "$root/$r" "$m" "$n" "$k" 2>&1) ||
        line=$(python3 -c 'import json,sys; print(json.dumps({"recipe": sys.argv[1], "shape": sys.argv[2], "error": sys.argv[3]}))' "$r" "$m,$n,$k" "$wgmma: $line")
      echo "$line" | tee -a "$out/kiln.jsonl" ;;
  esac
done || exit $?

if [ -n "$torch" ]; then
  echo "== PyTorch peers ($py)"
  "$py" "$root/bench/gpu/peers_gpu.py" peers "$out/cases.json" | tee "$out/peers.jsonl"
fi
python3 "$root/bench/gpu/peers_gpu.py" summarize "$out" >/dev/null && echo "== $out/gpu-results.md" && cat "$out/gpu-results.md"
exit $status
