#!/usr/bin/env bash
# bench/peers/build_llama.sh — llama.cpp's llama-bench (and libllama) for the end-to-end
# peer (bench/e2e.sh): takes the llama-cpp-python source distribution from PyPI (it
# carries llama.cpp under vendor/llama.cpp; the same pinned release as build_ggml.sh),
# builds libllama, its ggml CPU backend and the one tool llama-bench (Release,
# GGML_NATIVE, llamafile's sgemm on as llama.cpp's own build has it; no tests, examples,
# server, curl or openssl) and installs them once into $KILN_PEERS_CACHE/llama-<version>/
# (bin/llama-bench, lib/libllama.so, lib/libggml*.so; the binary finds its libraries
# through an $ORIGIN/../lib rpath). Prints that directory. Nothing of llama.cpp enters
# the repository.
#
# usage: bench/peers/build_llama.sh
# env:   KILN_GGML_VERSION (the pinned llama-cpp-python release, default below),
#        KILN_PEERS_CACHE (default ~/.cache/kiln/peers), PIP (default "python3 -m pip"),
#        KILN_PEERS_JOBS (build jobs, default nproc)
set -euo pipefail
# shellcheck source=bench/peers/llama_sdist.sh
. "$(dirname "$0")/llama_sdist.sh"
prefix=$cache/llama-$ver
jobs=${KILN_PEERS_JOBS:-$(nproc)}
opts=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DGGML_NATIVE=ON -DGGML_LLAMAFILE=ON
      -DGGML_CCACHE=OFF -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF
      -DLLAMA_BUILD_COMMON=ON -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
      -DLLAMA_BUILD_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF
      -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON "-DCMAKE_INSTALL_RPATH=\$ORIGIN/../lib")
stamp=$(native_stamp "${opts[*]}")
if [ -f "$prefix/.built" ] && [ "$(cat "$prefix/.built")" = "$stamp" ] &&
   [ -x "$prefix/bin/llama-bench" ]; then
  echo "$prefix"
  exit 0
fi
sdist=$(fetch_sdist)
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-llama.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar xzf "$sdist" -C "$work" "llama_cpp_python-$ver/vendor/llama.cpp"
src=$work/llama_cpp_python-$ver/vendor/llama.cpp
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
cmake -S "$src" -B "$work/build" "${gen[@]}" "${opts[@]}" >&2
# Only llama-bench and what it links: the other tools stay unbuilt, so the libraries and
# the binary are copied into place rather than run through cmake --install (whose rules
# name every tool).
cmake --build "$work/build" -j "$jobs" --target llama-bench >&2
rm -rf "$prefix"
mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/include"
cp -P "$work/build/bin/llama-bench" "$prefix/bin/"
find "$work/build" -name '*.so*' \( -type f -o -type l \) -exec cp -P {} "$prefix/lib/" \;
cp "$src/include/llama.h" "$src"/ggml/include/*.h "$prefix/include/"
"$prefix/bin/llama-bench" --help >/dev/null
echo "$stamp" >"$prefix/.built"
echo "$prefix"
