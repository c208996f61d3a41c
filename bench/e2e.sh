#!/usr/bin/env bash
# bench/e2e.sh — end-to-end tokens/s of SmolLM2-135M-Instruct: kiln (`kiln bench RECIPE
# --model`), llama.cpp's llama-bench on the same GGUF (Q4_1) and PyTorch through
# transformers (bench/peers/torch_e2e.py: f32, bf16, torch.ao dynamic int8, torchao CPU
# configs), same threads, same prompt and generation lengths, in interleaved rounds
# (round i: every kiln recipe, llama-bench, the torch variants); writes
# bench/results/e2e-<YYYYMMDD>-<cpu>.md and .json (docs/bench.md, "End-to-end peers").
# A peer that does not build, install or run is a row saying why; the suite goes on.
#
# usage: bench/e2e.sh [--rounds R] [--reps N] [--threads T] [-p P] [-n N]
#                     [--recipes "w8a8-int8-dynamic w4a8 ..."] [--torch-variants "bf16 ..."]
#                     [--no-kiln] [--no-llama] [--no-torch] [--out FILE.md]
# env:   KILN_BIN (default build/kiln, built by scripts/setup.sh when missing),
#        KILN_MODELS_DIR (default ~/.cache/kiln/models), KILN_PEERS_CACHE (default
#        ~/.cache/kiln/peers: llama.cpp's build, the Hugging Face directory of the GGUF),
#        KILN_GGML_VERSION, KILN_E2E_VENV, KILN_INTEROP_VENV, KILN_TORCHAO_VERSION
#        (bench/peers/build_llama.sh, bench/peers/torch_venv.sh), KILN_E2E_TIMEOUT (seconds
#        one engine's run of a round may take, default 1800: then what it finished counts
#        and the rest reads n/a).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
args=$(printf '%q ' "$@"); args=${args% }

rounds=2 reps=5 threads=2 n_prompt=512 n_gen=128 recipes="" variants="" out=""
do_kiln=1 do_llama=1 do_torch=1
need() { [ $# -ge 2 ] || { echo "e2e: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
  case $1 in
    --rounds) need "$@"; rounds=$2; shift ;;
    --reps) need "$@"; reps=$2; shift ;;
    --threads) need "$@"; threads=$2; shift ;;
    -p) need "$@"; n_prompt=$2; shift ;;
    -n) need "$@"; n_gen=$2; shift ;;
    --recipes) need "$@"; recipes=$2; shift ;;
    --torch-variants) need "$@"; variants=$2; shift ;;
    --out) need "$@"; out=$2; shift ;;
    --no-kiln) do_kiln=0 ;;
    --no-llama) do_llama=0 ;;
    --no-torch) do_torch=0 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
for v in "rounds:$rounds:1:100" "reps:$reps:1:1000" "threads:$threads:1:256" \
         "-p:$n_prompt:0:8192" "-n:$n_gen:0:8192"; do
  IFS=: read -r name val lo hi <<<"$v"
  if ! [[ $val =~ ^[0-9]+$ ]] || ((val < lo || val > hi)); then
    echo "e2e: ${name#-} $val: must be an integer in $lo..$hi" >&2; exit 2
  fi
done
((n_prompt + n_gen > 0)) || { echo "e2e: -p 0 and -n 0 leave no test to run" >&2; exit 2; }
if [ -z "$recipes" ]; then
  recipes="w8a8-int8-dynamic w4a8"
  for r in w8a8-int8-dynamic-head w4a8-head; do [ -f "recipes/$r.lua" ] && recipes+=" $r"; done
fi
for r in $recipes; do
  [ -f "recipes/$r.lua" ] || { echo "e2e: --recipes: no recipes/$r.lua" >&2; exit 2; }
done
variants=${variants:-f32 bf16 ao-int8-dyn torchao-int8-dyn torchao-int8-wo torchao-int4-wo torchao-w4a8}
models=${KILN_MODELS_DIR:-$HOME/.cache/kiln/models}
gguf=$models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$gguf" ] || { echo "e2e: $gguf: missing (run scripts/fetch-models.sh)" >&2; exit 2; }
cache=${KILN_PEERS_CACHE:-$HOME/.cache/kiln/peers}
kiln=${KILN_BIN:-build/kiln}
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
cpu_tag=$(tr '[:upper:]' '[:lower:]' <<<"${cpu:-cpu}" | sed 's/([^)]*)//g; s/[^a-z0-9]\{1,\}/-/g; s/^-//; s/-$//')
: "${out:=bench/results/e2e-$(date +%Y%m%d)-$cpu_tag.md}"
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-e2e.XXXXXX")
trap 'rm -rf "$work"' EXIT
raw=$work/raw.jsonl
log() { echo "[$(date +%H:%M:%S)] e2e: $*" >&2; }
table() { python3 bench/e2e_table.py "$@"; }
note() { table note "$1" "$2" >>"$raw"; }
fail() { table tag "$1" "$2" --error "$3" ${4:+--weights "$4"} </dev/null >>"$raw"; }  # tool round message [weights]
oneline() { tail -c "${2:-300}" "$1" | tr '\n' ' ' | sed 's/  */ /g'; }

# ---------------------------------------------------------------- what the suite needs
err_kiln="" err_llama="" err_torch="" llama_dir="" py=""
if ((do_kiln)) || ((do_torch)); then
  if [ ! -x "$kiln" ]; then
    log "building kiln (scripts/setup.sh)"
    bash scripts/setup.sh >&2 && kiln=build/kiln
  fi
  [ -x "$kiln" ] || err_kiln="kiln did not build (scripts/setup.sh)"
fi
if ((do_llama)); then
  log "llama.cpp: bench/peers/build_llama.sh (built once into $cache, then reused)"
  llama_dir=$(bash bench/peers/build_llama.sh 2>"$work/llama_build.log") ||
    err_llama="llama-bench did not build: $(oneline "$work/llama_build.log")"
fi
if ((do_torch)); then
  log "torch: bench/peers/torch_venv.sh"
  py=$(bash bench/peers/torch_venv.sh 2>"$work/venv.log") && [ -x "$py" ] ||
    err_torch="no torch venv: ${py:-$(oneline "$work/venv.log")}"
  hf=$cache/smollm2-hf-f32
  # The GGUF's weights dequantized to f32 as a Hugging Face directory, made by kiln;
  # remade when the GGUF or kiln changes.
  stamp="$(stat -c '%s %Y' "$gguf") $("$kiln" --version 2>/dev/null)"
  if [ -z "$err_torch" ] && [ "$(cat "$hf.stamp" 2>/dev/null)" != "$stamp" ]; then
    if [ -n "$err_kiln" ]; then
      err_torch="no Hugging Face directory: $err_kiln"
    else
      log "torch: $kiln quantize recipes/f32.lua --model smollm2 -o $hf"
      rm -rf "$hf" "$hf.stamp"
      if KILN_MODELS_DIR=$models "$kiln" quantize recipes/f32.lua --model smollm2 -o "$hf" \
           >"$work/hf.log" 2>&1; then
        echo "$stamp" >"$hf.stamp"
      else
        err_torch="kiln quantize recipes/f32.lua --model smollm2 failed: $(oneline "$work/hf.log")"
      fi
    fi
  fi
fi

# ---------------------------------------------------------------- running
llama_cmd=("$llama_dir/bin/llama-bench" -m "$gguf" -t "$threads" -p "$n_prompt" -n "$n_gen"
           -r "$reps" -o json)
kiln_cmd() { kcmd=("$kiln" bench "recipes/$1.lua" --model smollm2 -p "$n_prompt" -n "$n_gen"
                    --threads "$threads" --repeat "$reps" --json); }
torch_cmd=("$py" bench/peers/torch_e2e.py "$cache/smollm2-hf-f32" -p "$n_prompt" -n "$n_gen"
           -t "$threads" -r "$reps" --variants "${variants// /,}")

run_tool() { # tool round label weights cmd...: its JSON into $raw, or an error record
  local tool=$1 rd=$2 label=$3 w=$4 st t0=$SECONDS; shift 4
  log "round $rd/$rounds: $label"
  timeout "${KILN_E2E_TIMEOUT:-1800}" "$@" >"$work/out.json" 2>"$work/err.log"
  st=$?
  if ((st == 0)); then
    table tag "$tool" "$rd" <"$work/out.json" >>"$raw"
  else
    # what it finished before it failed still counts; the failure is a record too
    table tag "$tool" "$rd" <"$work/out.json" | grep -v '"error": "no result' >>"$raw"
    fail "$tool" "$rd" "$label exited $st: $(oneline "$work/err.log")" "$w"
  fi
  log "round $rd/$rounds: $label: $((SECONDS - t0)) s (exit $st)"
}

t_start=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)
: >"$raw"
for ((rd = 1; rd <= rounds; rd++)); do
  if ((do_kiln)); then
    for r in $recipes; do
      if [ -n "$err_kiln" ]; then fail kiln "$rd" "$err_kiln" "$r"; continue; fi
      kiln_cmd "$r"
      KILN_MODELS_DIR=$models run_tool kiln "$rd" "kiln $r" "$r" "${kcmd[@]}"
    done
  fi
  if ((do_llama)); then
    if [ -n "$err_llama" ]; then fail llama "$rd" "$err_llama"
    else run_tool llama "$rd" llama-bench "" "${llama_cmd[@]}"; fi
  fi
  if ((do_torch)); then
    if [ -n "$err_torch" ]; then fail torch "$rd" "$err_torch"
    else run_tool torch "$rd" "torch ($variants)" "" "${torch_cmd[@]}"; fi
  fi
done
t_end=$(date +%s)

# ---------------------------------------------------------------- the results file
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
        grep -E '^(avx2|avx512f|avx512_vnni|avx512_bf16|amx_tile|amx_int8)$' | tr '\n' ' ')
fam=$(lscpu | sed -n 's/^CPU family: *//p' | head -n 1)
mod=$(lscpu | sed -n 's/^Model: *//p' | head -n 1)
note model "SmolLM2-135M-Instruct"
note threads "$threads"
note date "$(date -u '+%Y-%m-%d %H:%M UTC')"
note cpu "$cpu (family $fam, model $mod; $(nproc) cores; ${flags% })"
note "suite" "bench/e2e.sh $args: $rounds interleaved round(s) of [kiln recipes, llama-bench, torch], $reps timed repetitions each after one warm-up, $(( (t_end - t_start) / 60 )) min $(( (t_end - t_start) % 60 )) s; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
note "model file" "$gguf (Q4_1; torch: its weights dequantized to f32 by kiln quantize recipes/f32.lua, as a Hugging Face directory)"
kiln_cmd RECIPE
((do_kiln)) && note "cmd kiln" "${kcmd[*]}" &&
  note "kiln" "$("$kiln" --version 2>/dev/null || echo '?'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes'); recipes: $recipes"
((do_llama)) && note "cmd llama.cpp" "${llama_cmd[*]}" &&
  note "llama.cpp" "llama-cpp-python ${KILN_GGML_VERSION:-0.3.36}'s vendor/llama.cpp, built by bench/peers/build_llama.sh (Release, GGML_NATIVE, llamafile sgemm) in ${llama_dir:-(not built)}"
((do_torch)) && note "cmd torch" "${torch_cmd[*]}" &&
  note "torch" "$("$py" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' 2>/dev/null || echo 'n/a'), $(sed -n 2p "${py%/bin/python}/.kiln-e2e" 2>/dev/null || echo 'torchao: n/a'); eager, torch.set_num_threads($threads)"
load_end=$(cut -d' ' -f1 /proc/loadavg)
# A 1-minute load above the core count means other work took cores from the engines:
# OpenMP peers (llama.cpp, torch) then lose most at their barriers; say so on top.
if awk -v a="$load_start" -v b="$load_end" -v n="$(nproc)" 'BEGIN { exit !(a > n || b > n) }'; then
  note warning "the host was busy: 1-minute load average $load_start at the start, $load_end at the end, on $(nproc) cores. Other processes took cores from the engines, and OpenMP peers (llama.cpp, torch) lose most from that (their threads wait for each other at every barrier): these numbers measure the contention as much as the engines"
fi
mkdir -p "$(dirname "$out")"
table table "$raw" --md "$out" --json "${out%.md}.json" || { echo "e2e: the table could not be made (raw results: $raw)" >&2; cp "$raw" "${out%.md}.raw.jsonl"; exit 4; }
cp "$raw" "${out%.md}.raw.jsonl"
log "wrote $out, ${out%.md}.json (raw: ${out%.md}.raw.jsonl)"
