#!/usr/bin/env python3
"""tests/e2e_table/test_e2e_table.py — bench/e2e_table.py (the tokens/s table of bench/e2e.sh)
on canned outputs: llama_bench.json is llama-bench's real `-o json` output (`llama-bench -m
SmolLM2-135M-Instruct.Q4_1.gguf -t 2 -p 512 -n 128 -o json`, bench/peers/build_llama.sh's
build, on a busy 2-core host), kiln_bench.json a `kiln bench --model
--json` array in the shape kiln prints, torch.jsonl bench/peers/torch_e2e.py's lines with
chatter and a variant that failed. Run by ctest as `e2e_table` (label peers)."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "bench", "e2e_table.py")


def run(*args, stdin=""):
    p = subprocess.run([sys.executable, TOOL, *args], input=stdin, capture_output=True,
                       text=True, check=False)
    return p.returncode, p.stdout, p.stderr


def fixture(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


class E2ETable(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.raw = os.path.join(self.tmp.name, "raw.jsonl")
        self.md = os.path.join(self.tmp.name, "out.md")
        self.js = os.path.join(self.tmp.name, "out.json")

    def tearDown(self):
        self.tmp.cleanup()

    def tag(self, tool, rnd, text, *extra):
        rc, out, err = run("tag", tool, str(rnd), *extra, stdin=text)
        self.assertEqual(rc, 0, err)
        with open(self.raw, "a", encoding="utf-8") as f:
            f.write(out)
        return [json.loads(x) for x in out.splitlines()]

    def two_rounds(self):
        for rd in (1, 2):
            self.tag("kiln", rd, fixture("kiln_bench.json"))
            self.tag("llama", rd, fixture("llama_bench.json"))
            self.tag("torch", rd, fixture("torch.jsonl"))
        with open(self.raw, "a", encoding="utf-8") as f:
            f.write(run("note", "cpu", "AMD EPYC 9R14")[1])
            f.write(run("note", "cmd llama.cpp", "llama-bench -m x.gguf -t 2")[1])
        rc, _, err = run("table", self.raw, "--md", self.md, "--json", self.js)
        self.assertEqual(rc, 0, err)
        with open(self.js, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        with open(self.md, encoding="utf-8") as f:
            return {(r["engine"], r["weights"], r["test"]): r for r in rows}, f.read()

    def llama_samples(self, n_prompt, n_gen):
        for o in json.loads(fixture("llama_bench.json")):
            if o["n_prompt"] == n_prompt and o["n_gen"] == n_gen:
                return o["samples_ts"], o["model_type"]
        self.fail("fixture lacks the test")

    def test_tag_reads_llama_bench_array(self):
        recs = self.tag("llama", 1, fixture("llama_bench.json"))
        self.assertEqual(len(recs), 2)
        self.assertEqual({r["result"]["n_prompt"] for r in recs}, {512, 0})
        self.assertTrue(all(r["tool"] == "llama" and r["round"] == 1 for r in recs))

    def test_tag_skips_chatter_and_records_failures(self):
        recs = self.tag("torch", 3, fixture("torch.jsonl"))
        self.assertEqual(len(recs), 4)
        recs = self.tag("kiln", 2, "kiln bench: Segmentation fault\n")
        self.assertEqual(recs, [{"tool": "kiln", "round": 2,
                                 "error": "no result (the tool printed no JSON object)"}])
        recs = self.tag("llama", 1, "", "--error", "llama-bench did not build: no cmake")
        self.assertEqual(recs[0]["error"], "llama-bench did not build: no cmake")
        rc, _, err = run("tag", "vllm", "1")
        self.assertEqual(rc, 2)
        self.assertIn("unknown tool 'vllm'", err)

    def test_means_over_all_rounds_and_ratio_to_llama(self):
        rows, md = self.two_rounds()
        ls, mtype = self.llama_samples(512, 0)
        lmean = statistics.fmean(ls * 2)
        self.assertAlmostEqual(rows[("llama.cpp", mtype, "pp512")]["mean_ts"], lmean, places=6)
        self.assertAlmostEqual(rows[("llama.cpp", mtype, "pp512")]["stddev_ts"],
                               statistics.stdev(ls * 2), places=6)
        k = rows[("kiln", "w8a8-int8-dynamic", "pp512")]
        self.assertEqual(k["n_samples"], 4)
        self.assertAlmostEqual(k["mean_ts"], 500.0)
        self.assertAlmostEqual(k["stddev_ts"], statistics.stdev([490, 510, 490, 510]))
        self.assertAlmostEqual(k["vs_llama_cpp"], 500.0 / lmean)
        tg, _ = self.llama_samples(0, 128)
        t = rows[("torch", "bf16", "tg128")]
        self.assertAlmostEqual(t["vs_llama_cpp"], 25.0 / statistics.fmean(tg))
        self.assertEqual(t["rounds"], {"1": [25.0, 25.0], "2": [25.0, 25.0]})
        self.assertIn(f"| kiln | w8a8-int8-dynamic | pp512 | 500.0 ± 11.5 | {500.0 / lmean:.2f}× |", md)
        self.assertIn(f"| llama.cpp | {mtype} | tg128 | ", md)
        self.assertIn("host: AMD EPYC 9R14", md)
        self.assertIn("- cmd llama.cpp: `llama-bench -m x.gguf -t 2`", md)

    def test_order_pp_first_llama_first(self):
        _, md = self.two_rounds()
        body = [x for x in md.split("## Per round")[0].splitlines() if x.startswith("| ") and "|---" not in x][1:]
        tests = [x.split("|")[3].strip() for x in body]
        self.assertEqual(tests, sorted(tests, key=lambda t: not t.startswith("pp")))
        engines = [x.split("|")[1].strip() for x in body if "pp512" in x]
        self.assertEqual(engines[0], "llama.cpp")
        self.assertEqual(len(body), 8)  # 4 weights x 2 tests

    def test_failed_variant_is_a_row_saying_why(self):
        rows, md = self.two_rounds()
        r = rows[("torch", "torchao-w4a8", "pp512")]
        self.assertIsNone(r["mean_ts"])
        self.assertIsNone(r["vs_llama_cpp"])
        self.assertIn("| torch | torchao-w4a8 | pp512 | n/a: setup failed: RuntimeError: no CPU kernel | — |", md)

    def test_no_llama_means_no_ratio_and_tool_errors_listed(self):
        self.tag("kiln", 1, fixture("kiln_bench.json"))
        self.tag("llama", 1, "", "--error", "llama-bench did not build: no cmake")
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 0, err)
        with open(self.md, encoding="utf-8") as f:
            md = f.read()
        self.assertIn("| kiln | w8a8-int8-dynamic | tg128 | 100.0 ± 0.0 | — |", md)
        self.assertIn("- llama.cpp round 1: llama-bench did not build: no cmake", md)

    def test_busy_host_warning_on_top(self):
        self.tag("llama", 1, fixture("llama_bench.json"))
        with open(self.raw, "a", encoding="utf-8") as f:
            f.write(run("note", "warning", "the host was busy: load 14 on 2 cores")[1])
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 0, err)
        with open(self.md, encoding="utf-8") as f:
            md = f.read()
        self.assertIn("**Warning: the host was busy: load 14 on 2 cores.**", md)
        self.assertLess(md.index("**Warning"), md.index("| engine |"))
        self.assertNotIn("- warning:", md)

    def test_failed_recipe_is_a_row_on_every_test(self):
        self.tag("llama", 1, fixture("llama_bench.json"))
        self.tag("kiln", 1, "", "--weights", "w4a8", "--error", "kiln w4a8 exited 2: bad recipe")
        rc, _, err = run("table", self.raw, "--md", self.md, "--json", self.js)
        self.assertEqual(rc, 0, err)
        with open(self.md, encoding="utf-8") as f:
            md = f.read()
        for test in ("pp512", "tg128"):
            self.assertIn(f"| kiln | w4a8 | {test} | n/a: kiln w4a8 exited 2: bad recipe | — |", md)
        self.assertIn("- kiln round 1: kiln w4a8 exited 2: bad recipe", md)

    def test_bad_input_is_located(self):
        bad = json.loads(fixture("kiln_bench.json"))
        bad[1]["samples_ts"] = [100.0, -3.0]
        self.tag("kiln", 1, json.dumps(bad))
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 2)
        self.assertIn(f"{self.raw}:2 (kiln, round 1): t/s sample -3.0 is not a positive finite number", err)
        del bad[0]["recipe"]
        open(self.raw, "w").close()
        self.tag("kiln", 1, json.dumps(bad[:1]))
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 2)
        self.assertIn(":1 (kiln, round 1): no \"recipe\"", err)
        with open(self.raw, "w", encoding="utf-8") as f:
            f.write('{"tool": "kiln", "round": 1, "result": {"recipe": "x", "n_prompt": 0, "n_gen": 0}}\n')
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 2)
        self.assertIn("n_prompt and n_gen are both 0", err)
        with open(self.raw, "w", encoding="utf-8") as f:
            f.write("{not json\n")
        rc, _, err = run("table", self.raw, "--md", self.md)
        self.assertEqual(rc, 2)
        self.assertIn(f"{self.raw}:1: not JSON", err)
        rc, _, err = run("table", os.path.join(self.tmp.name, "none.jsonl"), "--md", self.md)
        self.assertEqual(rc, 2)
        self.assertIn("none.jsonl: No such file", err)


if __name__ == "__main__":
    unittest.main(verbosity=1)
