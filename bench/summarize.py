"""bench/summarize.py — turns the raw results of bench/run_suite.sh (a stream of JSON
objects: one per kiln bench run or peer line, each tagged with its case and round)
into the Markdown tables of bench/results/cpu-<date>.md (docs/bench.md describes them).
Standard library only.
usage: python3 summarize.py [--machine] RAW_FILE >> RESULTS.md
(--machine: only the lines on the CPU and the eviction, for the "Machine" section)"""
import statistics
import sys
from collections import defaultdict

from jsonstream import read_values

# Each recipe family's like-for-like peers: the same weight and activation formats.
# The fastest of them is the row's "like-for-like" column. A peer whose formats depend
# on the host (OpenVINO quantizes activations or not) names its family per line instead,
# as "peer_of".
LIKE_FOR_LIKE = {
    "w4a8": ["ggml-q4_0"],
    "w8a8": ["ggml-q8_0", "onednn-u8s8", "torch-int8-dyn"],
    "w4a16": ["torch-int4pack"],
    "w8a16": ["torch-int8pack"],
    "f32": ["openblas-sgemv", "openblas-sgemm", "onednn-f32", "torch-f32"],
}


def read_stream(path):
    with open(path) as f:
        return read_values(f.read(), path)


def fmt(v, nd=1, na="n/a"):
    return na if v is None else f"{v:.{nd}f}"


def median_of(runs, get):
    vals = [v for v in (get(x) for x in runs) if v is not None]
    return statistics.median(vals) if vals else None


class Results:
    """The raw stream sorted by case: kiln runs per recipe, peer medians per variant."""

    def __init__(self, recs):
        self.kiln = defaultdict(list)   # (case, recipe) -> [kiln bench JSON]
        self.peers = defaultdict(list)  # (case, peer) -> [median_ms]
        self.peer_info = {}             # peer -> its last successful line
        self.peer_err = {}              # (case, peer) -> error text
        self.peer_evict = set()         # eviction sizes the peers' cold runs read
        self.peer_lines = {}            # (case, peer) -> its last successful line
        self.peer_of = defaultdict(set)  # (case, recipe family) -> peers saying they match it
        self.unfused = set()            # (case, peer) that computed an unfused decompression
        self.order = []
        for r in recs:
            case, res = r["case"], r["result"]
            if case not in self.order:
                self.order.append(case)
            if r["tool"] == "kiln":
                runs = self.kiln[(case, r["recipe"])]
                if "median_ms" in res:
                    runs.append(res)
            elif "median_ms" in res:
                self.peers[(case, res["peer"])].append(res["median_ms"])
                self.peer_info[res["peer"]] = res
                self.peer_lines[(case, res["peer"])] = res
                if "peer_of" in res:
                    self.peer_of[(case, res["peer_of"])].add(res["peer"])
                if res.get("fused") is False:
                    self.unfused.add((case, res["peer"]))
                if res.get("evict_bytes"):
                    self.peer_evict.add(res["evict_bytes"])
            else:
                self.peer_err[(case, res.get("peer", "?"))] = res.get("error", "failed")

    def peer_ms(self, case, peer):
        ms = self.peers.get((case, peer))
        return statistics.median(ms) if ms else None

    def fastest(self, case, names=None):
        """(peer, ms) of the fastest peer of the case, among `names` when given; a peer
        that ran an unfused weight decompression is never compared."""
        best = None
        for (c, p) in self.peers:
            m = self.peer_ms(c, p)
            if (c == case and m is not None and (names is None or p in names)
                    and (c, p) not in self.unfused):
                if best is None or m < best[1]:
                    best = (p, m)
        return best

    def all_kiln(self, pred=lambda case, x: True):
        return [x for (c, _), rs in self.kiln.items() for x in rs if pred(c, x)]


def vs(peer, kiln_ms):
    """The 'peer (ms)' and 'kiln ÷ peer' cells: speed ratio, > 1 = kiln faster."""
    if not peer:
        return "—", "—"
    return f"{peer[0]} ({peer[1]:.3f})", f"{peer[1] / kiln_ms:.2f}×"


def main_table(res):
    print("| case | recipe | kernel | kiln ms | GOP/s | GB/s | % of limit (bound) "
          "| like-for-like peer (ms) | kiln ÷ like | best peer (ms) | kiln ÷ best |")
    print("|---|---|---|---:|---:|---:|---:|---|---:|---|---:|")
    for case in res.order:
        best = res.fastest(case)
        for (c, recipe), runs in res.kiln.items():
            if c != case:
                continue
            if not runs:
                print(f"| {case} | {recipe} | failed |" + " n/a |" * 8)
                continue
            med = statistics.median(x["median_ms"] for x in runs)
            frac = statistics.median(x["limit_fraction"] for x in runs)
            last = runs[-1]
            bound = "memory" if last["bound"] == "memory" else last.get("peak_insn", last["peak"])
            family = recipe.split("-")[0]
            like = LIKE_FOR_LIKE.get(family, []) + sorted(res.peer_of[(case, family)])
            like_cell, like_ratio = vs(res.fastest(case, like) if like else None, med)
            best_cell, best_ratio = vs(best, med)
            print(f"| {case} | {recipe} | {last['kernel']} | {med:.3f} ({len(runs)}) "
                  f"| {last['ops'] / (med * 1e6):.1f} | {last['bytes'] / (med * 1e6):.2f} "
                  f"| {100 * frac:.0f}% ({bound}) | {like_cell} | {like_ratio} "
                  f"| {best_cell} | {best_ratio} |")


def peer_table(res):
    print("Peers, every variant (median ms over rounds; n/a with the reason when it failed):")
    print()
    print("| case | peer | dtype | median ms |")
    print("|---|---|---|---:|")
    for case in res.order:
        names = sorted({p for (c, p) in list(res.peers) + list(res.peer_err) if c == case})
        for p in names:
            m = res.peer_ms(case, p)
            dtype = res.peer_lines.get((case, p), {}).get("dtype", "-")
            cell = f"{m:.3f}" if m is not None else f"n/a ({res.peer_err.get((case, p), '')})"
            if (case, p) in res.unfused:
                cell += " (unfused decompression: not compared)"
            print(f"| {case} | {p} | {dtype} | {cell} |")
    paths = {p: i for p, i in res.peer_info.items() if "path" in i}
    if paths:
        print()
        print("ggml: " + "; ".join(f"{p} weights in the {i['path']} buffer type"
                                   for p, i in sorted(paths.items()))
              + f" (CPU features of its build: {next(iter(paths.values())).get('features', '?')}).")
    openvino_notes(res)


def openvino_notes(res):
    """What OpenVINO's plugin made of each variant in each case (bench/peers/peers_openvino.py)."""
    rows = [(c, p, i) for (c, p), i in res.peer_lines.items() if "fc_primitive" in i]
    if not rows:
        return
    print()
    print(f"OpenVINO {rows[0][2]['openvino']}, what its CPU plugin ran (the decompression "
          "fused into one FullyConnected on u4/u8 weights, or not):")
    print()
    print("| case | peer | fused | FullyConnected primitive | inference precision "
          "| dynamic quantization (group) | threads asked / busy | error / bound |")
    print("|---|---|---|---|---|---|---|---:|")
    for case, p, i in rows:
        dq = "applied" if i["dyn_quant_applied"] else "not applied"
        print(f"| {case} | {p} | {'yes' if i['fused'] else 'NO'} | {i['fc_primitive']} "
              f"| {i['inference_precision']} | {dq} ({i['dyn_quant_group_size']}) "
              f"| {i['threads']} / {i['busy_threads']} | {i['err_over_bound']:.3f} |")


def machine_notes(res):
    runs = res.all_kiln()
    if not runs:
        return
    cpu, ev = runs[-1].get("cpu"), runs[-1].get("eviction")
    if cpu:
        print(f"- CPU as kiln sees it: {cpu['model']} ({cpu['vendor']} family {cpu['family']} "
              f"model {cpu['model_id']}); FMA on subnormal operands "
              f"{'free' if cpu['subnormal_fma_free'] else 'slow'} "
              f"({fmt(cpu.get('fma_subnormal_ns'), 2)} ns vs {fmt(cpu.get('fma_ns'), 2)} ns)")
    if ev:
        kiln_sizes = {x["eviction"]["bytes"] for x in runs if x.get("cold")}
        if not res.peer_evict:
            same = "no peer ran cold"
        elif res.peer_evict == kiln_sizes:
            same = "every peer read the same"
        else:
            same = (f"DIFFERENT sizes: kiln {sorted(kiln_sizes)}, peers "
                    f"{sorted(res.peer_evict)} bytes")
        print(f"- Cold-run eviction: kiln read {ev['bytes'] / 2**20:.0f} MiB before every cold "
              f"run (from {ev['source']}; sysfs L{ev['llc_level']} {ev['llc_bytes'] / 2**20:.0f} "
              f"MiB, MemAvailable {ev['mem_available_bytes'] / 2**30:.1f} GiB); {same}")


def limits_table(res):
    print("Machine limits the probes measured, per thread count (median over every kiln "
          "run at that count; n/a: not on this CPU):")
    print()
    print("| threads | runs | read GB/s 1 thread | read GB/s at T (best loop) | FMA ymm GFLOP/s "
          "| FMA zmm GFLOP/s | vpmaddwd GOP/s | vpmaddubsw GOP/s | VNNI GOP/s | BF16 GFLOP/s | AMX |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for t in sorted({x["threads"] for x in res.all_kiln()}):
        runs = res.all_kiln(lambda c, x: x["threads"] == t)
        L = lambda k: median_of(runs, lambda x: x["limits"].get(k))
        loops = sorted({x["limits"].get("read_loop", "?") for x in runs})
        amx = runs[-1]["limits"].get("amx", None)
        amx_cell = "not present" if amx is None else \
            "present (" + ", ".join(k for k in ("tile", "int8", "bf16") if amx.get(k)) + "), not probed"
        print(f"| {t} | {len(runs)} | {fmt(L('read_gbs_1t'))} | {fmt(L('read_gbs_nt'))} "
              f"({'/'.join(loops)}) | {fmt(L('fma_gflops'))} | {fmt(L('fma_zmm_gflops'))} "
              f"| {fmt(L('madd_gops'))} | {fmt(L('maddubs_gops'))} | {fmt(L('vnni_gops'))} "
              f"| {fmt(L('bf16_gflops'))} | {amx_cell} |")


def compile_table(res):
    print("Compile and prepack, per case (median over the case's kiln runs):")
    print()
    print("| case | compile cold / warm ms | prepack GB/s (f32 in) |")
    print("|---|---|---:|")
    for case in res.order:
        runs = res.all_kiln(lambda c, x: c == case)
        if runs:
            print(f"| {case} | {fmt(median_of(runs, lambda x: x['compile']['cold_ms']), 0)} / "
                  f"{fmt(median_of(runs, lambda x: x['compile']['warm_ms']), 2)} "
                  f"| {fmt(median_of(runs, lambda x: x['prepack']['f32_in_gbs']), 3)} |")


def main():
    machine = sys.argv[1] == "--machine"
    res = Results(read_stream(sys.argv[-1]))
    if machine:
        machine_notes(res)
        return
    main_table(res)
    print()
    peer_table(res)
    print()
    limits_table(res)
    print()
    compile_table(res)


if __name__ == "__main__":
    main()
