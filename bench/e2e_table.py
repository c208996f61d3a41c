#!/usr/bin/env python3
"""bench/e2e_table.py — the raw stream of bench/e2e.sh (kiln bench --model, llama-bench and
the PyTorch peers, every round) into the tokens/s table of bench/results/e2e-*.md and .json
(docs/bench.md, "End-to-end peers"). Standard library only.

  e2e_table.py tag TOOL ROUND [--weights W] [--error TEXT] < OUTPUT >> RAW
      TOOL's output (any JSON: llama-bench's array, kiln's and the torch peer's one object
      a line) as one record a line: {"tool", "round", "result"}; with --error, or when
      OUTPUT holds no JSON object, one record {"tool", "round", "error"} instead, with
      "weights" (a kiln recipe) when given: the table then shows that row as n/a.
  e2e_table.py note KEY VALUE >> RAW
      a fact about the run (host, command, version) for the results file's header.
  e2e_table.py table RAW --md OUT.md [--json OUT.json]
      the table: one row per (engine, weights, test) with the mean ± sample standard
      deviation of every repetition's t/s over all rounds, and its ratio to llama.cpp's
      mean on the same test.

Errors (exit 2) name the file, the record and what is wrong with it."""
import argparse
import json
import math
import statistics
import sys

from jsonstream import StreamError, read_values

ENGINE_ORDER = {"llama.cpp": 0, "kiln": 1, "torch": 2}
TOOL_ENGINE = {"llama": "llama.cpp", "kiln": "kiln", "torch": "torch"}


class InputError(Exception):
    pass


def read_stream(text, where):
    """Every JSON value in text (concatenated or one a line); arrays are flattened."""
    try:
        return read_values(text, where, flatten=True)
    except StreamError as e:
        raise InputError(str(e)) from None


def parse_tool_output(text):
    """The JSON objects of a tool's output, skipping any line that is not JSON (a tool's
    own chatter on stdout), so a crash's partial output still yields what it finished."""
    objs = []
    try:
        objs = read_stream(text, "output")
    except InputError:
        objs = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    objs.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return [o for o in objs if isinstance(o, dict)]


def cmd_tag(args):
    if args.tool not in TOOL_ENGINE:
        raise InputError(f"tag: unknown tool {args.tool!r} (known: {', '.join(TOOL_ENGINE)})")
    objs = [] if args.error else parse_tool_output(sys.stdin.read())
    if not objs:
        err = args.error or "no result (the tool printed no JSON object)"
        rec = {"tool": args.tool, "round": args.round, "error": err}
        if args.weights:
            rec["weights"] = args.weights
        print(json.dumps(rec))
    for o in objs:
        print(json.dumps({"tool": args.tool, "round": args.round, "result": o}))
    return 0


def cmd_note(args):
    print(json.dumps({"tool": "note", "key": args.key, "value": args.value}))
    return 0


def test_name(res, where):
    np_, ng = res.get("n_prompt"), res.get("n_gen")
    if not isinstance(np_, int) or not isinstance(ng, int):
        raise InputError(f"{where}: n_prompt/n_gen missing or not integers")
    if np_ > 0 and ng == 0:
        return f"pp{np_}"
    if ng > 0 and np_ == 0:
        return f"tg{ng}"
    if ng > 0 and np_ > 0:
        return f"pp{np_}+tg{ng}"
    raise InputError(f"{where}: n_prompt and n_gen are both 0")


def weights_of(engine, res, where):
    if engine == "kiln":
        w = res.get("recipe")
    elif engine == "llama.cpp":
        w = res.get("model_type")
    else:
        w = res.get("variant")
    if not isinstance(w, str) or not w:
        key = {"kiln": "recipe", "llama.cpp": "model_type"}.get(engine, "variant")
        raise InputError(f"{where}: no \"{key}\" (the weights of the row)")
    return w


def samples_of(res, where):
    s = res.get("samples_ts")
    if s is None:
        s = [res.get("avg_ts")]
    if not isinstance(s, list) or not s:
        raise InputError(f"{where}: samples_ts is not a non-empty list")
    for v in s:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise InputError(f"{where}: t/s sample {v!r} is not a positive finite number")
    return [float(v) for v in s]


class Row:
    def __init__(self, engine, weights, test):
        self.engine, self.weights, self.test = engine, weights, test
        self.samples = []        # every repetition's t/s, all rounds
        self.rounds = {}         # round -> that round's samples
        self.errors = {}         # round -> error text
        self.info = {}           # the last successful result's descriptive fields

    def mean_sd(self):
        if not self.samples:
            return None, None
        sd = statistics.stdev(self.samples) if len(self.samples) > 1 else 0.0
        return statistics.fmean(self.samples), sd


class Table:
    def __init__(self):
        self.rows = {}
        self.notes = {}
        self.tool_errors = []    # (tool, round, text): a tool that gave no result at all
        self.failed_weights = []  # (engine, weights, round, text): such a tool's named row

    def row(self, engine, weights, test):
        key = (engine, weights, test)
        if key not in self.rows:
            self.rows[key] = Row(engine, weights, test)
        return self.rows[key]

    def add(self, rec, where):
        tool = rec.get("tool")
        if tool == "note":
            if not isinstance(rec.get("key"), str):
                raise InputError(f"{where}: a note without a key")
            self.notes[rec["key"]] = rec.get("value")
            return
        if tool not in TOOL_ENGINE:
            raise InputError(f"{where}: unknown tool {tool!r}")
        engine, rnd = TOOL_ENGINE[tool], rec.get("round")
        if not isinstance(rnd, int):
            raise InputError(f"{where}: round missing or not an integer")
        where = f"{where} ({tool}, round {rnd})"
        if "error" in rec:
            self.tool_errors.append((engine, rnd, str(rec["error"])))
            if isinstance(rec.get("weights"), str) and rec["weights"]:
                self.failed_weights.append((engine, rec["weights"], rnd, str(rec["error"])))
            return
        res = rec.get("result")
        if not isinstance(res, dict):
            raise InputError(f"{where}: no result object")
        r = self.row(engine, weights_of(engine, res, where), test_name(res, where))
        if "error" in res:
            r.errors[rnd] = str(res["error"])
            r.info.setdefault("weights_desc", res.get("weights"))
            return
        s = samples_of(res, where)
        r.samples += s
        r.rounds.setdefault(rnd, []).extend(s)
        r.info.update({k: res[k] for k in ("backend", "weights", "model_filename", "model_size",
                                           "model_n_params", "n_threads", "cpu_info",
                                           "build_commit", "build_number", "backends")
                       if k in res})

    def sorted_rows(self):
        tests = []
        for r in self.rows.values():
            if r.test not in tests:
                tests.append(r.test)
        tests.sort(key=lambda t: (not t.startswith("pp"), not t.startswith("tg"), t))
        seen = list(self.rows.values())
        return sorted(seen, key=lambda r: (tests.index(r.test), ENGINE_ORDER.get(r.engine, 9),
                                           seen.index(r)))

    def baseline(self, test):
        for r in self.rows.values():
            if r.engine == "llama.cpp" and r.test == test and r.samples:
                return r.mean_sd()[0]
        return None


def load_table(path):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise InputError(f"{path}: {e.strerror}") from None
    t = Table()
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{i}: not JSON: {e.msg}") from None
        if not isinstance(rec, dict):
            raise InputError(f"{path}:{i}: a record is a JSON object")
        t.add(rec, f"{path}:{i}")
    if not t.rows and not t.tool_errors:
        raise InputError(f"{path}: no results")
    # A named row whose tool failed is n/a on every test the others ran.
    tests = sorted({r.test for r in t.rows.values()}) or ["all tests"]
    for engine, w, rnd, msg in t.failed_weights:
        for test in tests:
            t.row(engine, w, test).errors.setdefault(rnd, msg)
    return t


def cell_ts(r):
    m, sd = r.mean_sd()
    if m is None:
        why = "; ".join(sorted(set(r.errors.values()))) or "no result"
        return f"n/a: {why}"
    return f"{m:.1f} ± {sd:.1f}"


def cell_vs(r, base):
    m = r.mean_sd()[0]
    if m is None or base is None:
        return "—"
    return f"{m / base:.2f}×"


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_md(t):
    n = t.notes
    out = [f"# End-to-end tokens/s: {n.get('model', 'SmolLM2-135M-Instruct')}, "
           f"{n.get('threads', '?')} threads", ""]
    out.append(f"{n.get('date', '')}; host: {n.get('cpu', 'unknown CPU')}. "
               "Made by `bench/e2e.sh` (docs/bench.md, \"End-to-end peers\").")
    out.append("")
    if n.get("warning"):
        out += [f"**Warning: {md_escape(n['warning'])}.**", ""]
    out += ["| engine | weights | test | t/s (mean ± sd) | vs llama.cpp |",
            "|---|---|---|---|---|"]
    for r in t.sorted_rows():
        out.append(f"| {r.engine} | {md_escape(r.weights)} | {r.test} | "
                   f"{md_escape(cell_ts(r))} | {cell_vs(r, t.baseline(r.test))} |")
    out += ["", "mean ± sd over every repetition of every round (sample standard deviation); "
            "vs llama.cpp = this row's mean / llama-bench's mean on the same test.", ""]
    rounds = sorted({k for r in t.rows.values() for k in list(r.rounds) + list(r.errors)})
    if rounds:
        out += ["## Per round (mean t/s of the round's repetitions)", "",
                "| engine | weights | test | " + " | ".join(f"round {k}" for k in rounds) + " |",
                "|---|---|---|" + "---|" * len(rounds)]
        for r in t.sorted_rows():
            cells = []
            for k in rounds:
                if k in r.rounds:
                    cells.append(f"{statistics.fmean(r.rounds[k]):.1f} (n={len(r.rounds[k])})")
                else:
                    cells.append("n/a" if k in r.errors else "—")
            out.append(f"| {r.engine} | {md_escape(r.weights)} | {r.test} | " + " | ".join(cells) + " |")
        out.append("")
    if t.tool_errors:
        out += ["## Runs that gave no result", ""]
        out += [f"- {e} round {k}: {md_escape(msg)}" for e, k, msg in t.tool_errors]
        out.append("")
    out += render_details(t)
    return "\n".join(out) + "\n"


def render_details(t):
    out = ["## What ran", ""]
    for r in t.sorted_rows():
        desc = r.info.get("weights") or r.info.get("weights_desc")
        back = r.info.get("backend") or r.info.get("backends")
        if r.test.startswith("pp") and (desc or back):
            bits = [x for x in (desc, back) if x]
            out.append(f"- {r.engine} {md_escape(r.weights)}: {md_escape('; '.join(map(str, bits)))}")
    skip = {"model", "threads", "date", "cpu", "warning"}
    rest = [(k, v) for k, v in t.notes.items() if k not in skip]
    if rest:
        out += ["", "## Run", ""]
        for k, v in rest:
            v = str(v)
            out.append(f"- {k}: `{v}`" if k.startswith("cmd") else f"- {k}: {md_escape(v)}")
    out.append("")
    return out


def render_json(t):
    rows = []
    for r in t.sorted_rows():
        m, sd = r.mean_sd()
        base = t.baseline(r.test)
        rows.append({"engine": r.engine, "weights": r.weights, "test": r.test,
                     "mean_ts": m, "stddev_ts": sd, "n_samples": len(r.samples),
                     "vs_llama_cpp": (m / base) if (m is not None and base) else None,
                     "rounds": {str(k): v for k, v in sorted(r.rounds.items())},
                     "errors": {str(k): v for k, v in sorted(r.errors.items())},
                     **{k: v for k, v in r.info.items() if v is not None}})
    return {"notes": t.notes, "rows": rows,
            "tool_errors": [{"engine": e, "round": k, "error": m} for e, k, m in t.tool_errors]}


def cmd_table(args):
    t = load_table(args.raw)
    md = render_md(t)
    with open(args.md, "w", encoding="utf-8") as f:
        f.write(md)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(render_json(t), f, indent=1)
            f.write("\n")
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog="e2e_table.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("tag")
    a.add_argument("tool")
    a.add_argument("round", type=int)
    a.add_argument("--weights")
    a.add_argument("--error")
    a = sub.add_parser("note")
    a.add_argument("key")
    a.add_argument("value")
    a = sub.add_parser("table")
    a.add_argument("raw")
    a.add_argument("--md", required=True)
    a.add_argument("--json")
    args = p.parse_args(argv)
    try:
        return {"tag": cmd_tag, "note": cmd_note, "table": cmd_table}[args.cmd](args)
    except InputError as e:
        print(f"e2e_table: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
