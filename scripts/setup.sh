#!/usr/bin/env bash
# scripts/setup.sh — install what kiln needs on Debian bookworm (only what is missing)
# and build it with CMake into build/ (or $1). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=(build-essential cmake ninja-build pkg-config llvm-16-dev liblua5.4-dev libffi-dev
      libcmocka-dev libpcre2-dev valgrind bible-kjv python3-pip python3-numpy
      clang-14 libclang-rt-14-dev  # clang + libFuzzer: scripts/fuzz.sh
      gnuplot-nox  # the plots of kiln eval/bench --report (docs/report.md)
      python3-dev)  # Python.h for kiln._fast, the Python package's C forward (docs/python.md)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=${1:-build}
shift || true
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
