"""bench/summarize.py — turns the raw results of bench/run_suite.sh (a stream of JSON
objects: one per kiln bench run or peer line, each tagged with its case and round)
into the Markdown table of bench/results/cpu-<date>.md. Standard library only.
usage: python3 summarize.py RAW_FILE >> RESULTS.md"""
import json
import statistics
import sys
from collections import defaultdict


def read_stream(path):
    text = open(path).read()
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        obj, i = dec.raw_decode(text, i)
        out.append(obj)


def fmt(v, nd=2):
    return "n/a" if v is None else f"{v:.{nd}f}"


def main():
    recs = read_stream(sys.argv[1])
    kiln = defaultdict(list)  # (case, recipe) -> [result]
    peers = defaultdict(list)  # (case, peer) -> [median_ms]
    peer_err = {}
    order = []
    for r in recs:
        case = r["case"]
        if case not in order:
            order.append(case)
        res = r["result"]
        if r["tool"] == "kiln":
            if "median_ms" in res:
                kiln[(case, r["recipe"])].append(res)
            else:
                kiln.setdefault((case, r["recipe"]), [])
        elif "median_ms" in res:
            peers[(case, res["peer"])].append(res["median_ms"])
        else:
            peer_err[(case, res.get("peer", "?"))] = res.get("error", "failed")
    print("| case | kernel | kiln median ms | GOP/s | GB/s | % of limit (bound) "
          "| best peer (ms) | kiln ÷ best peer (speed; >1 = kiln faster) |")
    print("|---|---|---:|---:|---:|---:|---|---:|")
    for case in order:
        pbest = None
        for (c, p), ms in peers.items():
            if c == case and ms:
                m = statistics.median(ms)
                if pbest is None or m < pbest[1]:
                    pbest = (p, m)
        for (c, recipe), runs in kiln.items():
            if c != case:
                continue
            name = f"{case} {recipe}"
            if not runs:
                print(f"| {name} | failed | n/a | n/a | n/a | n/a | n/a | n/a |")
                continue
            med = statistics.median(x["median_ms"] for x in runs)
            frac = statistics.median(x["limit_fraction"] for x in runs)
            last = runs[-1]
            gops = last["ops"] / (med * 1e6)
            gbs = last["bytes"] / (med * 1e6)
            bound = last["bound"] if last["bound"] == "memory" else last["peak"]
            spread = f" ({len(runs)} runs)"
            if pbest:
                peer = f"{pbest[0]} ({pbest[1]:.3f})"
                ratio = f"{pbest[1] / med:.2f}×"
            else:
                peer, ratio = "n/a", "n/a"
            print(f"| {name} | {last['kernel']} | {med:.3f}{spread} | {gops:.1f} | {gbs:.2f} "
                  f"| {100 * frac:.0f}% ({bound}) | {peer} | {ratio} |")
    print()
    print("Peers, every variant (median ms over rounds; n/a with the reason when it failed):")
    print()
    print("| case | peer | median ms |")
    print("|---|---|---:|")
    for case in order:
        names = sorted({p for (c, p) in list(peers) + list(peer_err) if c == case})
        for p in names:
            ms = peers.get((case, p))
            cell = f"{statistics.median(ms):.3f}" if ms else f"n/a ({peer_err.get((case, p), '')})"
            print(f"| {case} | {p} | {cell} |")
    print()
    print("Machine limits measured inside each kiln run (median over the runs of a case):")
    print()
    print("| case | read GB/s 1 thread | read GB/s at T | FMA GFLOP/s at T | vpmaddwd GOP/s at T "
          "| vpmaddubsw GOP/s at T | VNNI | BF16 | compile cold / warm ms | prepack GB/s (f32 in) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for case in order:
        runs = [x for (c, _), rs in kiln.items() if c == case for x in rs]
        if not runs:
            continue
        def med(f):
            v = [f(x) for x in runs if f(x) is not None]
            return statistics.median(v) if v else None
        L = lambda k: med(lambda x: x["limits"].get(k))
        print(f"| {case} | {fmt(L('read_gbs_1t'), 1)} | {fmt(L('read_gbs_nt'), 1)} "
              f"| {fmt(L('fma_gflops'), 1)} | {fmt(L('madd_gops'), 1)} "
              f"| {fmt(L('maddubs_gops'), 1) if L('maddubs_gops') else 'n/a'} "
              f"| {fmt(L('vnni_gops'), 1) if L('vnni_gops') else 'n/a on this CPU'} "
              f"| {fmt(L('bf16_gflops'), 1) if L('bf16_gflops') else 'n/a on this CPU'} "
              f"| {fmt(med(lambda x: x['compile']['cold_ms']), 0)} / "
              f"{fmt(med(lambda x: x['compile']['warm_ms']), 2)} "
              f"| {fmt(med(lambda x: x['prepack']['f32_in_gbs']), 3)} |")


if __name__ == "__main__":
    main()
