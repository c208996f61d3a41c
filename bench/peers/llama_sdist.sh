# bench/peers/llama_sdist.sh — sourced by build_ggml.sh and build_llama.sh: the pinned
# llama-cpp-python source distribution from PyPI (it carries llama.cpp under
# vendor/llama.cpp), where the built peers are cached, and the stamp a native build is
# kept under. Nothing of llama.cpp enters the repository.
# env: KILN_GGML_VERSION (the pinned llama-cpp-python release, default below),
#      KILN_PEERS_CACHE (default ~/.cache/kiln/peers), PIP (default "python3 -m pip")
ver=${KILN_GGML_VERSION:-0.3.36}
cache=${KILN_PEERS_CACHE:-$HOME/.cache/kiln/peers}

# A native build is only good for the CPU it was built on: the stamp names the CPU's
# flags and the build options ("$@").
native_stamp() {
  { grep -m1 '^flags' /proc/cpuinfo; echo "$*"; } | md5sum | cut -c1-12
}

# Downloads the sdist once into $cache and prints its path.
fetch_sdist() {
  local sdist=$cache/llama_cpp_python-$ver.tar.gz
  mkdir -p "$cache"
  if [ ! -f "$sdist" ]; then
    # shellcheck disable=SC2086
    ${PIP:-python3 -m pip} download -q --no-binary :all: --no-deps \
      "llama-cpp-python==$ver" -d "$cache" >&2
  fi
  echo "$sdist"
}
