#!/usr/bin/env bash
# scripts/test.sh — the test command: set up, build, run the whole suite (plain build),
# then again under AddressSanitizer + UndefinedBehaviorSanitizer, then each fuzz target
# for 30 s, then the leak check of the core programs under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d ../shared/testdata ]; then
  echo "test: ../shared/testdata is missing (the FP8 reference tables live there); tests that read it will fail" >&2
fi
jobs=$(nproc)

bash scripts/setup.sh build
bash scripts/fetch-models.sh   # the real-model tests read them ($KILN_MODELS_DIR or ~/.cache/kiln/models)
(cd build && ctest --output-on-failure -j"$jobs")

# -O2 with the sanitizers: they catch the same errors, and the suite runs 3x faster than -O0
bash scripts/setup.sh build-asan -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$jobs")

# The libFuzzer targets (tests/fuzz/), 30 s each: any crash, leak or sanitizer report fails.
bash scripts/fuzz.sh 30

bash scripts/valgrind.sh build
