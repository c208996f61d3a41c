#!/usr/bin/env bash
# scripts/test.sh — the test command: set up, build, run the whole suite (plain build),
# then the main job (scripts/main.sh), then the suite again under AddressSanitizer +
# UndefinedBehaviorSanitizer, then each fuzz target for 30 s, then the leak check of the
# core programs under valgrind. Every stage runs
# even when an earlier one failed; the summary at the end names each failed stage, and
# the script exits 1 if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -d ../shared/testdata ]; then
  echo "test: ../shared/testdata is missing (the FP8 reference tables live there); tests that read it will fail" >&2
fi
jobs=$(nproc)
failed=()
t_all=$(date +%s)

stage() { # name command...
  local name=$1 t0=$(date +%s) rc=0
  shift
  echo "== test: $name"
  "$@" || rc=$?
  if ((rc)); then
    failed+=("$name (exit $rc)")
    echo "== test: $name: FAILED (exit $rc) after $(( $(date +%s) - t0 )) s"
  else
    echo "== test: $name: ok, $(( $(date +%s) - t0 )) s"
  fi
}

ctest_in() { # build-dir [env...]
  local dir=$1
  shift
  (cd "$dir" && env "$@" ctest --output-on-failure -j"$jobs")
}

echo "test: host $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) cores"
stage "setup + build" bash scripts/setup.sh build
# the real-model tests read them ($KILN_MODELS_DIR or ~/.cache/kiln/models)
stage "fetch models" bash scripts/fetch-models.sh
[ -x build/kiln ] && build/kiln targets | tail -n 3
stage "unit, CLI and model tests" ctest_in build
# the README's other command, as a new user runs it (kiln eval on SmolLM2, ~1 min)
stage "main job (scripts/main.sh)" bash scripts/main.sh
# -O2 with the sanitizers: they catch the same errors, and the suite runs 3x faster than -O0
stage "ASan+UBSan build" bash scripts/setup.sh build-asan -DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
stage "tests under ASan+UBSan" ctest_in build-asan ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
# The libFuzzer targets (tests/fuzz/), 30 s each: any crash, leak or sanitizer report fails.
stage "fuzzers" bash scripts/fuzz.sh 30
stage "valgrind" bash scripts/valgrind.sh build

echo "== test: $(( ($(date +%s) - t_all) / 60 )) min $(( ($(date +%s) - t_all) % 60 )) s"
if ((${#failed[@]})); then
  echo "== test: FAILED stages:" >&2
  printf '     %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "== test: all stages passed"
