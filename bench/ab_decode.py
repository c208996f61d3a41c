#!/usr/bin/env python3
"""Interleaved A/B decode timing of two kiln binaries (docs/bench.md).

  bench/ab_decode.py run BEFORE_KILN AFTER_KILN OUT.jsonl [--rounds 2]
  bench/ab_decode.py table OUT.jsonl > table.md

`run` times every recipe x shape x thread count with `kiln bench --cold --json`,
the two binaries back to back (each with its own kernel cache), rounds after
rounds, and brackets the runs with the streaming-read probe (1 s) of the AFTER
binary; one JSON line per run. `table` turns that into Markdown: medians per
round, % of the best probed read limit, and the ratio of the means.
"""
import collections
import json
import os
import subprocess
import sys

RECIPES = {"w8a16": "W8A16", "w4a16-g128-asym": "W4A16 g128", "fp8-e4m3-dynamic": "FP8 E4M3",
           "w4a8": "W4A8", "w8a8-int8-dynamic": "W8A8"}
SHAPES = ["1,4096,4096", "1,14336,4096", "1,4096,14336"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(kiln, tag, recipe, shape, threads, probe_ms):
    env = dict(os.environ, KILN_CACHE_DIR=os.path.join("/tmp", "kiln-ab-cache", tag))
    p = subprocess.run([kiln, "bench", os.path.join(ROOT, "recipes", recipe + ".lua"), "--shape", shape,
                        "--cold", "--threads", str(threads), "--repeat", "15", "--probe-ms", str(probe_ms),
                        "--json"], capture_output=True, text=True, env=env, check=True)
    return json.loads(p.stdout)


def run(before, after, out_path, rounds):
    bins = {"before": before, "after": after}
    with open(out_path, "w") as out:
        def limits():
            for t in (1, 2):
                d = bench(after, "after", "w8a8-int8-dynamic", SHAPES[0], t, 1000)
                out.write(json.dumps({"limit": True, "threads": t, "bandwidth_gbs": d["bandwidth_gbs"]}) + "\n")
                out.flush()
        limits()
        for rnd in range(rounds):
            for shape in SHAPES:
                for recipe in RECIPES:
                    for t in (1, 2):
                        for tag in ("before", "after"):
                            d = bench(bins[tag], tag, recipe, shape, t, 1)
                            rec = {"round": rnd, "bin": tag, "recipe": recipe, "shape": shape, "threads": t,
                                   "median_ms": d["median_ms"], "min_ms": d["min_ms"],
                                   "weight_bytes": d["weight_bytes"], "kernel": d["kernel"]}
                            out.write(json.dumps(rec) + "\n")
                            out.flush()
                            print("round %d %s %s t=%d %s %.3f ms" % (rnd, recipe, shape, t, tag, d["median_ms"]),
                                  file=sys.stderr)
        limits()


def table(path):
    rows = [json.loads(line) for line in open(path)]
    lim = collections.defaultdict(list)
    runs = collections.defaultdict(list)
    for r in rows:
        if r.get("limit"):
            lim[r["threads"]].append(r["bandwidth_gbs"])
        else:
            runs[(r["recipe"], r["shape"], r["threads"], r["bin"])].append(r)
    best = {t: max(v) for t, v in lim.items()}
    print("Read limit (streaming-read probe before and after the runs, the best taken): "
          + "; ".join("%d thread%s %s GB/s" % (t, "s" if t > 1 else "", " / ".join("%.2f" % x for x in lim[t]))
                      for t in sorted(lim)) + "\n")
    for t in sorted(best):
        print("| decode M=1 cold, %d thread%s | N×K | before: median ms per round | after | after, %% of the read "
              "limit | mean before / mean after |" % (t, "s" if t > 1 else ""))
        print("|---|---|---|---|---|---|")
        for recipe, name in RECIPES.items():
            for shape in SHAPES:
                b = [x["median_ms"] for x in runs[(recipe, shape, t, "before")]]
                a = [x["median_ms"] for x in runs[(recipe, shape, t, "after")]]
                if not a or not b:
                    continue
                wb = runs[(recipe, shape, t, "after")][0]["weight_bytes"]
                pct = sorted(wb / (m * 1e-3) / 1e9 / best[t] * 100 for m in a)
                nk = shape.split(",", 1)[1].replace(",", "×")
                print("| %s | %s | %s | %s | %s | %.2f× |" % (
                    name, nk, " / ".join("%.2f" % x for x in b), " / ".join("%.2f" % x for x in a),
                    "–".join("%.0f" % x for x in (pct[0], pct[-1])), (sum(b) / len(b)) / (sum(a) / len(a))))
        print()


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "run":
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 2
        run(sys.argv[2], sys.argv[3], sys.argv[4], rounds)
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
