#!/usr/bin/env bash
# bench/peers/build_ggml.sh — llama.cpp's ggml for the suite's ggml peer: downloads the
# llama-cpp-python source distribution from PyPI (it carries llama.cpp under
# vendor/llama.cpp), builds only ggml's CPU backend (Release, GGML_NATIVE, no tests or
# examples; llamafile's sgemm on, as llama.cpp's own build has it) and installs it
# once into $KILN_PEERS_CACHE/ggml-<version>/. Prints that directory. Nothing of
# llama.cpp enters the repository.
#
# usage: bench/peers/build_ggml.sh
# env:   KILN_GGML_VERSION (the pinned llama-cpp-python release, default below),
#        KILN_PEERS_CACHE (default ~/.cache/kiln/peers), PIP (default "python3 -m pip")
set -euo pipefail
# shellcheck source=bench/peers/llama_sdist.sh
. "$(dirname "$0")/llama_sdist.sh"
prefix=$cache/ggml-$ver
opts=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON
      -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF -DGGML_CCACHE=OFF)
stamp=$(native_stamp "${opts[*]}")
if [ -f "$prefix/.built" ] && [ "$(cat "$prefix/.built")" = "$stamp" ]; then
  echo "$prefix"
  exit 0
fi
sdist=$(fetch_sdist)
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-ggml.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar xzf "$sdist" -C "$work" "llama_cpp_python-$ver/vendor/llama.cpp/ggml"
src=$work/llama_cpp_python-$ver/vendor/llama.cpp/ggml
# The sdist leaves out ggml.pc.in, which a standalone ggml build configures; the peer
# links by path, not through pkg-config, so an empty one stands in.
[ -f "$src/ggml.pc.in" ] || : >"$src/ggml.pc.in"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
rm -rf "$prefix"
cmake -S "$src" -B "$work/build" "${gen[@]}" -DCMAKE_INSTALL_PREFIX="$prefix" "${opts[@]}" >&2
cmake --build "$work/build" -j "$(nproc)" >&2
cmake --install "$work/build" >&2
echo "$stamp" >"$prefix/.built"
echo "$prefix"
