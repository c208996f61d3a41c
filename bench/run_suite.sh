#!/usr/bin/env bash
# bench/run_suite.sh — kiln's standard CPU benchmark in one command: every recipe of the
# suite on the standard shapes, decode (M=1, cold caches) and prefill (M=512), 1 and 2
# threads, interleaved with peers (llama.cpp's ggml, PyTorch, OpenVINO, oneDNN, OpenBLAS)
# on the same shapes and threads with the same cache eviction; writes
# bench/results/cpu-<date>.md. docs/bench.md explains the numbers.
#
# usage: bench/run_suite.sh [--quick] [--rounds R] [--out FILE] [--no-peers]
#                           [--shapes "NxK ..."] [--ms "1 512"] [--threads "1 2"]
#                           [--recipes "w8a8-int8-dynamic ..."] [--e2e]
#                           [--peers "openblas onednn torch openvino ggml"]
#        --peers: only these peers (default: all five); --no-peers: none
#        --e2e: then the end-to-end tokens/s suite, bench/e2e.sh (SmolLM2 against
#        llama-bench and PyTorch; docs/bench.md, "End-to-end peers")
# env:   KILN_BIN (default build/kiln, built by scripts/setup.sh when missing),
#        KILN_BENCH_VENV (default ~/.cache/kiln/bench-venv: PyTorch and OpenVINO go there,
#        never in the repo), KILN_BENCH_PROBE_MS (default 250), KILN_BENCH_EVICT_BYTES
#        (default: what kiln's rule picks for this host), KILN_GGML_VERSION and
#        KILN_PEERS_CACHE (bench/peers/build_ggml.sh), KILN_OV_INFERENCE_PRECISION
#        (bench/peers/peers_openvino.py; default: the plugin's own for this CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
args=$(printf '%q ' "$@"); args=${args% }

quick=0 e2e=0 rounds= out= peers=1 shapes= ms_list= threads_list= recipes=
all_peers="openblas onednn torch openvino ggml" peer_list=
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --out) out=$2; shift ;;
    --no-peers) peers=0 ;;
    --e2e) e2e=1 ;;
    --shapes) shapes=$2; shift ;;
    --ms) ms_list=$2; shift ;;
    --threads) threads_list=$2; shift ;;
    --recipes) recipes=$2; shift ;;
    --peers) peer_list=$2; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run_suite: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
: "${peer_list:=$all_peers}"
for p in $peer_list; do
  [[ " $all_peers " == *" $p "* ]] ||
    { echo "run_suite: --peers: unknown peer '$p' (known: $all_peers)" >&2; exit 2; }
done
((peers)) || peer_list=
want() { [[ " $peer_list " == *" $1 "* ]]; }

if ((quick)); then
  : "${shapes:=4096x4096}" "${rounds:=1}"
else
  : "${shapes:=4096x4096 14336x4096 4096x14336}" "${rounds:=2}"
fi
: "${ms_list:=1 512}" "${threads_list:=1 2}"
if [ -z "$recipes" ]; then
  recipes="w4a16-g128-asym w4a8 w8a16 w8a8-int8-dynamic fp8-e4m3-dynamic"
  [ -f recipes/f32.lua ] && recipes+=" f32"
fi
date=$(date +%Y-%m-%d)
: "${out:=bench/results/cpu-$date.md}"
kiln=${KILN_BIN:-build/kiln}
venv=${KILN_BENCH_VENV:-$HOME/.cache/kiln/bench-venv}
probe_ms=${KILN_BENCH_PROBE_MS:-250}
work=$(mktemp -d "${TMPDIR:-/tmp}/kiln-bench-suite.XXXXXX")
trap 'rm -rf "$work"' EXIT
raw=$work/raw.json
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- what the suite needs
apt_need=()
for p in onednn:libdnnl-dev openblas:libopenblas-dev; do
  want "${p%%:*}" || continue
  dpkg-query -W -f='${Status}' "${p#*:}" 2>/dev/null | grep -q "install ok installed" ||
    apt_need+=("${p#*:}")
done
if want torch || want openvino; then
  python3 -m venv --help >/dev/null 2>&1 || apt_need+=(python3-venv)
fi
if ((${#apt_need[@]})); then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  log "installing ${apt_need[*]}"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $SUDO apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null; } ||
    log "apt-get failed: the peers that need ${apt_need[*]} will read n/a"
fi
if [ ! -x "$kiln" ]; then
  log "building kiln (scripts/setup.sh)"
  bash scripts/setup.sh >&2 || { echo "run_suite: kiln did not build" >&2; exit 4; }
  kiln=build/kiln
fi

# One eviction size for everyone: kiln's rule (tools/bench_probes.c, docs/bench.md)
# decides it once, every kiln run and every peer reads it from KILN_BENCH_EVICT_BYTES.
evict_note="given by the caller"
if [ -z "${KILN_BENCH_EVICT_BYTES:-}" ]; then
  read -r KILN_BENCH_EVICT_BYTES evict_note < <(
    "$kiln" bench "recipes/${recipes%% *}.lua" --shape 1,64,128 --repeat 1 --warmup 0 \
      --probe-ms 10 --json 2>"$work/evict.err" |
    python3 -c 'import json, sys; e = json.load(sys.stdin)["eviction"]
print(e["bytes"], "kiln rule on this host: max(256 MiB, 4 x L%d %d MiB) = %d MiB (%s)" % (
    e["llc_level"], e["llc_bytes"] >> 20, e["bytes"] >> 20, e["source"]))')
  [ -n "$KILN_BENCH_EVICT_BYTES" ] ||
    { echo "run_suite: kiln bench did not say its eviction size: $(head -c 300 "$work/evict.err")" >&2; exit 4; }
fi
export KILN_BENCH_EVICT_BYTES
log "cold runs evict by reading $((KILN_BENCH_EVICT_BYTES >> 20)) MiB (kiln and every peer)"

# Installs PIP_ARGS into the bench venv unless MODULE imports there already; prints why
# not on failure (the peer's rows then read n/a with it).
venv_install() { # peer module pip-args...
  local peer=$1 mod=$2; shift 2
  [ -x "$venv/bin/python" ] || { echo "no virtualenv at $venv (python3 -m venv failed)"; return; }
  "$venv/bin/python" -c "import $mod" >/dev/null 2>&1 && return
  log "installing $* into $venv from PyPI$([ "$peer" = torch ] && echo ' (large download)')"
  "$venv/bin/python" -m pip install -q "$@" >"$work/pip_$peer.log" 2>&1 ||
    echo "pip install $* failed: $(tail -n 2 "$work/pip_$peer.log" | tr '\n"' '  ')"
}

peer_err_openblas= peer_err_onednn= peer_err_torch= peer_err_openvino= peer_err_ggml= ggml_dir=
if want openblas; then
  cc -O2 -march=native -o "$work/peers_openblas" bench/peers/peers_openblas.c -lopenblas \
    2>"$work/cc_openblas.log" || peer_err_openblas="did not build: $(head -c 160 "$work/cc_openblas.log")"
fi
if want onednn; then
  cc -O2 -march=native -o "$work/peers_onednn" bench/peers/peers_onednn.c -ldnnl \
    2>"$work/cc_onednn.log" || peer_err_onednn="did not build: $(head -c 160 "$work/cc_onednn.log")"
fi
if (want torch || want openvino) && [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  python3 -m venv "$venv" >"$work/venv.log" 2>&1 ||
    log "python3 -m venv $venv failed: $(tail -n 1 "$work/venv.log")"
fi
if want torch; then
  peer_err_torch=$(venv_install torch torch torch numpy)
  [ -n "$peer_err_torch" ] && log "torch peer n/a: $peer_err_torch"
fi
if want openvino; then
  peer_err_openvino=$(venv_install openvino openvino openvino numpy)
  [ -n "$peer_err_openvino" ] && log "openvino peer n/a: $peer_err_openvino"
fi
if want ggml; then
  pip=(python3 -m pip); [ -x "$venv/bin/pip" ] && pip=("$venv/bin/python" -m pip)
  log "ggml: bench/peers/build_ggml.sh (downloads and builds once, then cached)"
  if ggml_dir=$(PIP="${pip[*]}" bash bench/peers/build_ggml.sh 2>"$work/ggml_build.log"); then
    cc -O2 -march=native -o "$work/peers_ggml" bench/peers/peers_ggml.c -I"$ggml_dir/include" \
      -L"$ggml_dir/lib" -Wl,-rpath,"$ggml_dir/lib" -lggml -lggml-base -lggml-cpu \
      2>"$work/cc_ggml.log" || peer_err_ggml="did not build: $(head -c 160 "$work/cc_ggml.log")"
  else
    peer_err_ggml="ggml did not build: $(tail -n 3 "$work/ggml_build.log" | tr '\n"' '  ')"
  fi
  [ -n "$peer_err_ggml" ] && log "ggml peer n/a: $peer_err_ggml"
fi

# ---------------------------------------------------------------- running
# Every result goes to $raw as {"case", "round", "tool", "recipe"?, "result": {...}}.
emit() { # case round tool recipe json
  printf '{"case": "%s", "round": %s, "tool": "%s", "recipe": "%s", "result": %s}\n' \
    "$1" "$2" "$3" "$4" "$5" >>"$raw"
}
peer_fail() { # case round peer-name dtype message
  local msg=${5//\"/\'}
  emit "$1" "$2" peer "" "{\"peer\": \"$3\", \"dtype\": \"$4\", \"error\": \"${msg//$'\n'/ }\"}"
}
run_kiln() { # case round recipe M N K T repeat warmup cold
  local r st
  r=$("$kiln" bench "recipes/$3.lua" --shape "$4,$5,$6" --threads "$7" --repeat "$8" \
        --warmup "$9" ${10} --probe-ms "$probe_ms" --json 2>"$work/kiln.err")
  st=$?
  if ((st == 0)); then
    emit "$1" "$2" kiln "$3" "$r"
  else
    log "kiln bench $3 $4,$5,$6 failed (exit $st): $(head -c 300 "$work/kiln.err")"
    emit "$1" "$2" kiln "$3" "{\"error\": \"exit $st\"}"
  fi
}
run_peer() { # case round name errvar cmd...
  local c=$1 rd=$2 name=$3 err=$4; shift 4
  if [ -n "$err" ]; then peer_fail "$c" "$rd" "$name" "-" "$err"; return; fi
  local line any=0
  while IFS= read -r line; do
    case $line in "{"*) emit "$c" "$rd" peer "" "$line"; any=1 ;; esac
  done < <(timeout 600 "$@" 2>"$work/peer.err")
  ((any)) || peer_fail "$c" "$rd" "$name" "-" "failed: $(tail -c 200 "$work/peer.err")"
}
# OMP_WAIT_POLICY=ACTIVE keeps the peers' OpenMP threads spinning between runs, as
# kiln bench --cold keeps its pool warm (docs/bench.md): cold caches, warm threads.
# OpenVINO runs on TBB, which has no such setting (docs/bench.md); OMP_NUM_THREADS there
# only keeps numpy's BLAS, used for its one correctness check, to T threads.
run_peers() { # case round M N K T repeat warmup cold01
  local c=$1 rd=$2; shift 2
  want openblas && run_peer "$c" "$rd" openblas "$peer_err_openblas" \
    env OPENBLAS_NUM_THREADS="$4" "$work/peers_openblas" "$@"
  want onednn && run_peer "$c" "$rd" onednn "$peer_err_onednn" \
    env OMP_NUM_THREADS="$4" OMP_WAIT_POLICY=ACTIVE "$work/peers_onednn" "$@"
  want torch && run_peer "$c" "$rd" torch "$peer_err_torch" \
    env OMP_NUM_THREADS="$4" OMP_WAIT_POLICY=ACTIVE "$venv/bin/python" bench/peers/peers_torch.py "$@"
  want openvino && run_peer "$c" "$rd" openvino "$peer_err_openvino" \
    env OMP_NUM_THREADS="$4" "$venv/bin/python" bench/peers/peers_openvino.py "$@"
  want ggml && run_peer "$c" "$rd" ggml "$peer_err_ggml" \
    env OMP_NUM_THREADS="$4" OMP_WAIT_POLICY=ACTIVE "$work/peers_ggml" "$@"
  return 0
}

t_start=$(date +%s)
for nk in $shapes; do
  N=${nk%x*} K=${nk#*x}
  for M in $ms_list; do
    if [ "$M" = 1 ]; then cold=--cold cold01=1 rep=$((quick ? 10 : 20)) warm=3
    else cold= cold01=0 rep=$((quick ? 3 : 5)) warm=1; fi
    for T in $threads_list; do
      case_name="M=$M N=$N K=$K T=$T${cold:+ cold}"
      log "case $case_name"
      # kiln, peers, kiln, peers, ..., kiln: the machine's drift hits both sides.
      for ((rd = 1; rd <= rounds + 1; rd++)); do
        for rc in $recipes; do run_kiln "$case_name" "$rd" "$rc" "$M" "$N" "$K" "$T" "$rep" "$warm" "$cold"; done
        ((rd <= rounds)) && run_peers "$case_name" "$rd" "$M" "$N" "$K" "$T" "$rep" "$warm" "$cold01"
      done
    done
  done
done
t_end=$(date +%s)

# ---------------------------------------------------------------- the results file
mkdir -p "$(dirname "$out")"
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
model=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' |
        grep -E '^(avx2|fma|f16c|avx512f|avx512_vnni|avx512_bf16|avx_vnni|amx_tile|amx_int8|amx_bf16)$' |
        tr '\n' ' ')
{
  echo "# kiln CPU benchmark, $date"
  echo
  echo "Produced by \`bench/run_suite.sh $args\` in $(( (t_end - t_start) / 60 )) min $(( (t_end - t_start) % 60 )) s;"
  echo "docs/bench.md explains every column. kiln $("$kiln" --version 2>/dev/null | cut -d' ' -f2), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + uncommitted changes')."
  echo
  echo "## Machine"
  echo
  echo "- CPU: $model, $(nproc) cores this process may use ($(lscpu | sed -n 's/^Thread(s) per core: *//p') thread(s) per core)"
  echo "- SIMD flags present (of the ones kiln cares about): $flags"
  echo "- Caches: L2 $(lscpu | sed -n 's/^L2 cache: *//p'), L3 $(lscpu | sed -n 's/^L3 cache: *//p'); memory $mem"
  echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  python3 bench/summarize.py --machine "$raw"
  echo
  echo "## Commands"
  echo
  echo "Per case, for each recipe: \`$kiln bench recipes/RECIPE.lua --shape M,N,K --threads T --repeat R --warmup W [--cold] --probe-ms $probe_ms --json\`;"
  echo "peers ($peer_list): \`peers_openblas M N K T R W COLD\`, \`OMP_NUM_THREADS=T OMP_WAIT_POLICY=ACTIVE peers_onednn ...\`, \`python bench/peers/peers_torch.py ...\`, \`peers_ggml ...\` (same env), \`OMP_NUM_THREADS=T python bench/peers/peers_openvino.py ...\` (INFERENCE_NUM_THREADS=T, pinned, inference precision ${KILN_OV_INFERENCE_PRECISION:-as the plugin picks})"
  echo "(built by the script with \`cc -O2 -march=native ... -lopenblas\` / \`-ldnnl\` / against \`${ggml_dir:-ggml (not built)}\`, llama.cpp's ggml from llama-cpp-python's sdist, by \`bench/peers/build_ggml.sh\`)."
  echo "Decode (M=1) runs cold: every run, kiln's and the peers', first reads \`KILN_BENCH_EVICT_BYTES=$KILN_BENCH_EVICT_BYTES\` bytes ($evict_note)."
  echo "$rounds interleaved round(s) of kiln then peers, plus a final kiln round; each number is the median over rounds of each run's median."
  echo
  echo "## Results"
  echo
  python3 bench/summarize.py "$raw"
} >"$out"
cp "$raw" "${out%.md}.raw.json"
log "wrote $out (raw results: ${out%.md}.raw.json)"
if ((e2e)); then
  log "end-to-end: bench/e2e.sh"
  KILN_BIN=$kiln bash bench/e2e.sh || log "bench/e2e.sh failed (exit $?)"
fi
