#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS [TARGET...]] — build the libFuzzer targets (tests/fuzz/) with
# clang-14 into build-fuzz/ and run each for SECONDS (default 30) on a corpus seeded from
# the repository's own files. Fails (exit 1) on any crash, leak, timeout, out-of-memory or
# sanitizer report (a recipe past 3 s or 640 MiB included); the input that did it is kept as build-fuzz/artifacts/TARGET-*.
# Prints executions and coverage per target. TARGET: recipe ir_parse safetensors gguf
# aot_manifest ckpt_config (default: all). The corpus in build-fuzz/corpus/ grows from run
# to run. A libFuzzer process is one thread, so the targets run $KILN_FUZZ_JOBS at a time
# (default: the number of cores): each still gets SECONDS of a core of its own, and on 2
# cores the six take 3 x SECONDS instead of 6 x (docs/testing.md, "Suite time").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(recipe ir_parse safetensors gguf aot_manifest ckpt_config)
out=build-fuzz

command -v clang-14 >/dev/null || { echo "fuzz: clang-14 is missing (scripts/setup.sh installs it)" >&2; exit 1; }
make -s -f tests/fuzz/fuzz.mk -j"$(nproc)" OUT=$out

# Seeds, refreshed every run: real recipes, broken recipes and sandbox tests; the IR text
# tests; generated model files; manifests written by `kiln aot`; inputs that once failed.
seed() {
  local t=$1 d=$out/seeds/$1
  rm -rf "$d"
  mkdir -p "$d"
  case $t in
    recipe) cp recipes/*.lua tests/recipes_bad/*.lua tests/recipes_sandbox/*.lua tests/recipes_budget/*.lua "$d"/ ;;
    ir_parse) cp tests/ir/*.kir tests/passes/*.kir "$d"/ ;;
    safetensors|gguf) python3 tests/fuzz/make_seeds.py "$out/seeds/gen-$t" && cp "$out/seeds/gen-$t/$t"/* "$d"/ ;;
    aot_manifest) cp tests/fuzz/seeds/manifest-*.json "$d"/ ;;
    ckpt_config) cp tests/fuzz/seeds/ckpt-*.json tests/ckpt_regex/*.json "$d"/ ;;
  esac
  if [ -d tests/fuzz/regressions/$t ]; then cp tests/fuzz/regressions/$t/* "$d"/; fi
}

declare -A max_len=([recipe]=8192 [ir_parse]=8192 [safetensors]=4096 [gguf]=8192 [aot_manifest]=16384
                   [ckpt_config]=16384)
# Per-input limits (libFuzzer -timeout s, -rss_limit_mb); 20 s and 2 GiB where not named.
# A recipe runs on a 200 000-instruction, 8 MiB, 1 s budget in this build (fuzz.mk): one
# that outlives 3 s or grows the process past 640 MiB (ASan's shadow and quarantine
# included) escaped its budgets, and that is a finding.
declare -A timeout_s=([recipe]=3) rss_mb=([recipe]=640)
# One target: seeded, then run for $secs with its limits; its exit status in $out/TARGET.rc.
run_target() {
  local t=$1 rc=0 dict=()
  [ -f tests/fuzz/$t.dict ] && dict=(-dict=tests/fuzz/$t.dict)
  ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    $out/fuzz_$t -max_total_time="$secs" -max_len="${max_len[$t]}" -timeout="${timeout_s[$t]:-20}" -rss_limit_mb="${rss_mb[$t]:-2048}" \
      -print_final_stats=1 -artifact_prefix=$out/artifacts/$t- "${dict[@]}" \
      $out/corpus/$t $out/seeds/$t >"$out/$t.log" 2>&1 || rc=$?
  echo "$rc" >"$out/$t.rc"
}

for t in "${targets[@]}"; do
  [ -n "${max_len[$t]:-}" ] || { echo "fuzz: unknown target '$t'" >&2; exit 2; }
done
jobs=${KILN_FUZZ_JOBS:-$(nproc)}
((jobs >= 1)) || jobs=1
mkdir -p $out/artifacts
running=0
for t in "${targets[@]}"; do
  seed "$t"
  mkdir -p $out/corpus/$t
  rm -f "$out/$t.rc"
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$t" &
  running=$((running + 1))
done
wait

failed=()
for t in "${targets[@]}"; do
  log=$out/$t.log
  rc=$(cat "$out/$t.rc" 2>/dev/null || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  if [ "$rc" != 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$log"; then
    echo "fuzz: $t: FAILED (exit $rc) after ${execs:-?} executions; log $log" >&2
    grep -E 'ERROR:|SUMMARY|runtime error|Test unit written|^    #[0-9] ' "$log" | head -30 >&2 || true
    failed+=("$t")
  else
    printf 'fuzz: %-13s %9s execs in %ss (%s/s)  cov %s  ft %s  corpus %s\n' \
      "$t" "${execs:-?}" "$secs" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: failed: ${failed[*]} (inputs in $out/artifacts/; make each a regression test under tests/)" >&2
  exit 1
fi
