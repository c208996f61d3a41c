#!/usr/bin/env bash
# tests/gpu/cuda_tools.sh — find or install NVIDIA's cuobjdump and nvdisasm (PyPI
# packages nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm; the CUDA toolkit in
# /usr/local/cuda lacks them) and print the folder holding both binaries.
#
#   cuda_tools.sh            print the bin folder (installing on first use)
#
# Installed with `pip install --target ${KILN_CUDA_TOOLS:-~/.cache/kiln/cuda-tools}`
# and reused after. Exit 0 with the folder on stdout; 77 and "SKIP: reason" when PyPI
# cannot be reached (or pip is missing); 1 when the install succeeded but the binaries
# are not where the wheels put them (a wheel layout change: fix this script).
set -uo pipefail
dir=${KILN_CUDA_TOOLS:-$HOME/.cache/kiln/cuda-tools}
pkgs="nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm"

find_bin() {
  local c n
  c=$(find "$dir" -type f -name cuobjdump -perm -u+x 2>/dev/null | head -n1)
  n=$(find "$dir" -type f -name nvdisasm -perm -u+x 2>/dev/null | head -n1)
  [ -n "$c" ] && [ -n "$n" ] && [ "$(dirname "$c")" = "$(dirname "$n")" ] && dirname "$c"
}

if b=$(find_bin); then echo "$b"; exit 0; fi
command -v python3 >/dev/null || { echo "SKIP: python3 not found (needed to pip-install $pkgs)"; exit 77; }
python3 -m pip --version >/dev/null 2>&1 || { echo "SKIP: pip not found (needed to install $pkgs)"; exit 77; }
mkdir -p "$dir"
log=$dir.install.log
# Is PyPI there at all? A download of the small wheel answers it.
probe=$(mktemp -d)
if ! timeout 120 python3 -m pip download --disable-pip-version-check --no-input --no-deps -q \
    -d "$probe" nvidia-cuda-cuobjdump >"$log" 2>&1; then
  rm -rf "$probe"
  echo "SKIP: PyPI is not reachable (pip could not download nvidia-cuda-cuobjdump; see $log)"
  exit 77
fi
rm -rf "$probe"
if ! timeout 600 python3 -m pip install --disable-pip-version-check --no-input --no-deps -q \
    --upgrade --target "$dir" $pkgs >>"$log" 2>&1; then
  echo "SKIP: pip install $pkgs failed (see $log)"
  exit 77
fi
if b=$(find_bin); then echo "$b"; exit 0; fi
echo "cuda_tools.sh: installed $pkgs into $dir but found no cuobjdump and nvdisasm there" >&2
exit 1
