#!/usr/bin/env bash
# bench/gpu/pack_for_device.sh — for a lent GPU machine that cannot build kiln (its image
# has CMake, ninja and CUDA but not LLVM 16, Lua 5.4 or cmocka): pack the two binaries
# bench/gpu/run_device.sh runs (test_cuda_runtime, kiln_gpu_bench) with the shared
# libraries they load (all but glibc's) into .device/kiln-device.tar.xz, and note the
# source folder they were built for (their recipes path). Carry `.device`; run_device.sh
# unpacks it when its build folder lacks the binaries. (.device is in .gitignore.)
#   pack_for_device.sh [BUILD]      (default: build)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build}
dest=$root/.device
for b in test_cuda_runtime kiln_gpu_bench; do
  [ -x "$build/$b" ] || { echo "pack_for_device.sh: $build/$b missing (cmake --build $build --target $b)" >&2; exit 2; }
done
rm -rf "$dest" && mkdir -p "$dest/stage/bin" "$dest/stage/lib"
cp "$build/test_cuda_runtime" "$build/kiln_gpu_bench" "$dest/stage/bin/"
ldd "$build/test_cuda_runtime" "$build/kiln_gpu_bench" | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case $(basename "$lib") in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*) ;;
    *) cp -L "$lib" "$dest/stage/lib/" ;;
  esac
done
sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" >"$dest/stage/source_dir"
tar -C "$dest/stage" -cJf "$dest/kiln-device.tar.xz" bin lib source_dir
rm -rf "$dest/stage"
echo "$dest/kiln-device.tar.xz: $(du -h "$dest/kiln-device.tar.xz" | cut -f1) (carry .device)"
