"""Shared fixtures of the kiln package's pytest suite (python/tests, run by
run_pytest.sh as the ctest python_package)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import List

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
TEST_RECIPES = Path(__file__).resolve().parent / "recipes"

# One torch thread: with several OpenMP threads on a busy 2-core machine torch's
# spinning workers slow a forward 30x; kiln's own pool is not affected.
torch.set_num_threads(1)


def kiln_bin() -> str:
    b = os.environ.get("KILN_BIN") or str(REPO / "build" / "kiln")
    if not os.access(b, os.X_OK):
        pytest.fail("no kiln binary at %s: build kiln or set KILN_BIN" % b)
    return b


def models_dir() -> Path:
    return Path(os.environ.get("KILN_MODELS_DIR") or Path.home() / ".cache" / "kiln" / "models")


def kiln_json(*args: str) -> dict:
    """`kiln ARGS... --json` (stderr, where its progress goes, dropped)."""
    p = subprocess.run([kiln_bin(), *args, "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0, "kiln %s: exit %d\n%s" % (" ".join(args), p.returncode, p.stderr[-2000:])
    return json.loads(p.stdout)


def bible_lines(range_: str) -> List[str]:
    """Verses as kiln eval reads them (model/eval/eval.c, bible_lines): one a line, the
    "Book1:1 " reference dropped, trailing blanks stripped, empty lines skipped."""
    try:
        out = subprocess.run(["bible", "-f", range_], capture_output=True, text=True).stdout
    except FileNotFoundError:
        pytest.fail("install the Debian package bible-kjv (scripts/setup.sh)")
    lines = []
    for line in out.splitlines():
        sp = line.find(" ")
        s = line[sp + 1:].rstrip("\r\n ")
        if sp >= 0 and s:
            lines.append(s)
    return lines


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    d = models_dir() / "minilm"
    if not (d / "model.safetensors").exists():
        pytest.fail("MiniLM missing at %s: run scripts/fetch-models.sh" % d)
    return d


@pytest.fixture(scope="session")
def smollm2_w8a8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 as the Hugging Face directory `kiln quantize` writes (W8A8 dynamic)."""
    gguf = models_dir() / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.fail("SmolLM2 missing at %s: run scripts/fetch-models.sh" % gguf)
    out = tmp_path_factory.mktemp("smollm2") / "w8a8"
    p = subprocess.run([kiln_bin(), "quantize", str(RECIPES / "w8a8-int8-dynamic.lua"),
                        "--model", "smollm2", "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out
