#!/usr/bin/env python3
# tests/interop/check_compressed_tensors.py — loads kiln-written checkpoints with
# compressed-tensors' own decompressor (its model-free CompressedTensorsDequantizer,
# i.e. each format's compressor.decompress) and compares every dequantized weight with
# kiln's (DIR.kiln_dequant.safetensors); for a model directory (config.json names an
# architecture), also loads it with Hugging Face transformers' from_pretrained and
# compares the decompressed weights, and with a DIR.kiln_ref.safetensors
# (kiln_interop_write) the tokenizer's ids, the logits, and transformers' own greedy
# generate against kiln's greedy tokens.
#
# usage: check_compressed_tensors.py [--legacy-ok] DIR[:DEQUANT] ...
#   DEQUANT defaults to DIR.kiln_dequant.safetensors (beside DIR, where
#   `kiln quantize --dequant` writes it), else DIR/kiln_dequant.safetensors.
#   Exit 0 all equal, 1 a mismatch or a load error, 77 when the installed
#   compressed-tensors cannot be used (SKIP).
import json
import os
import sys

import torch
from safetensors.torch import load_file

import compressed_tensors

failures = []


def note(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def dequantizer(directory):
    try:
        from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import (
            CompressedTensorsDequantizer,
        )
    except ImportError:
        print("SKIP: compressed-tensors %s has no model-free dequantizer "
              "(entrypoints.convert.converters.ct_dequantizer)" % compressed_tensors.__version__)
        sys.exit(77)
    return CompressedTensorsDequantizer(directory, dtype=torch.float32)


def compare(name, got, want, what):
    """Exact comparison; kiln and compressed-tensors both compute (q - z) * s in f32."""
    if got is None:
        note(False, "%s: %s missing" % (what, name))
        return
    if tuple(got.shape) != tuple(want.shape):
        note(False, "%s: %s shape %s, kiln %s" % (what, name, tuple(got.shape), tuple(want.shape)))
        return
    got = got.to(torch.float32)
    diff = (got - want).abs()
    bad = int((diff > 0).sum())
    if bad:
        note(False, "%s: %s differs in %d of %d values (max |diff| %g, max |w| %g)"
             % (what, name, bad, want.numel(), float(diff.max()), float(want.abs().max())))
    return bad == 0


def check_ct(directory, dequant):
    ref = load_file(dequant)
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    out = dequantizer(directory).process(dict(tensors))
    same = sum(1 for n, w in ref.items() if compare(n, out.get(n), w, "compressed-tensors"))
    note(same == len(ref), "%s: compressed-tensors %s decompressed %d/%d layers exactly as kiln"
         % (directory, compressed_tensors.__version__, same, len(ref)))


def check_hf(directory, dequant, causal):
    """The directory as a Hugging Face model: its weights after transformers'
    decompression; with DIR.kiln_ref.safetensors also the tokenizer's ids and the logits."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    ref_path = directory + ".kiln_ref.safetensors"
    refs = load_file(ref_path) if os.path.exists(ref_path) else None
    meta = {}
    tok = AutoTokenizer.from_pretrained(directory)
    if refs is not None:
        from safetensors import safe_open
        with safe_open(ref_path, "pt") as f:
            meta = f.metadata()
        text = meta["text"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        kiln_ids = refs["ids"].tolist()
        note(ids == kiln_ids, "%s: transformers %s tokenizer.json encodes the text as kiln does "
             "(%d ids)" % (directory, transformers.__version__, len(kiln_ids)))
        if ids != kiln_ids:
            print("     hf:  ", ids)
            print("     kiln:", kiln_ids)
    else:
        kiln_ids = tok("Hello, world.", add_special_tokens=False)["input_ids"]
    # The default load: each module gets its own config group's scheme, holds the
    # compressed tensors, and compressed-tensors decompresses it on the first forward.
    # (transformers 5.23's dequantize=True instead applies the first group's scheme to
    # every dense layer, which breaks checkpoints with several config groups.)
    # An asymmetric pack-quantized model does not load the default way (transformers
    # builds unpacked zero points, the format packs them): kiln_interop_write marks it
    # "load": "dequantize", and it is decompressed while loading.
    auto = AutoModelForCausalLM if causal else AutoModel
    kw = {}
    how = meta.get("load", "default")
    if how == "dequantize":
        from transformers import CompressedTensorsConfig
        kw["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    if how == "dequantize":
        probe_default_load(directory, auto)
    model = auto.from_pretrained(directory, dtype=torch.float32, **kw)
    model.eval()
    with torch.no_grad():
        out = model(torch.tensor([kiln_ids]))
    logits = out.logits[0].float() if causal else None
    sd = model.state_dict()
    ref = load_file(dequant)
    same = sum(1 for n, w in ref.items() if compare(n, sd.get(n), w, "transformers"))
    note(same == len(ref), "%s: transformers %s (%s load) decompressed %d/%d layers exactly "
         "as kiln" % (directory, transformers.__version__, how, same, len(ref)))
    if refs is None or not causal:
        return
    want = refs["logits"]
    err = float((logits - want).abs().max()) / float(want.abs().max())
    agree = float((logits.argmax(-1) == want.argmax(-1)).float().mean())
    # both run f32; only summation order and RoPE arithmetic differ
    note(err < 1e-3 and agree == 1.0,
         "%s: logits of transformers vs kiln: max |diff| / max |logit| = %.2e, argmax agree %.0f%%"
         % (directory, err, 100 * agree))
    if "greedy" in refs:
        check_generate(directory, model, tok, refs)


def probe_default_load(directory, auto):
    """Says (without failing) whether the default load still refuses the directory, so
    the day an upstream release fixes it shows here (docs/checkpoints.md)."""
    import transformers
    try:
        auto.from_pretrained(directory, dtype=torch.float32)
        print("note %s: transformers %s now loads it the default way too: update "
              "docs/checkpoints.md's known limits" % (directory, transformers.__version__))
    except Exception as e:
        print("note %s: transformers %s default load still refuses it (%s: %s)"
              % (directory, transformers.__version__, type(e).__name__, str(e)[:100]))


def check_generate(directory, model, tok, refs):
    """transformers' own generate (greedy) from the prompt must give kiln's greedy tokens."""
    prompt = refs["prompt_ids"].tolist()
    want = refs["greedy"].tolist()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=len(want), min_new_tokens=len(want))
    got = out[0, len(prompt):].tolist()
    note(got == want, "%s: transformers generate (greedy, %d tokens) %r, kiln %r"
         % (directory, len(want), tok.decode(prompt + got), tok.decode(prompt + want)))
    if got != want:
        print("     hf:  ", got)
        print("     kiln:", want)


def main():
    args = sys.argv[1:]
    if not args:
        print(__doc__ or "usage: check_compressed_tensors.py DIR[:DEQUANT] ...")
        return 2
    print("compressed-tensors %s, torch %s" % (compressed_tensors.__version__, torch.__version__))
    failed = 0
    for a in args:
        directory, _, dequant = a.partition(":")
        directory = directory.rstrip("/")
        if not dequant:
            dequant = directory + ".kiln_dequant.safetensors"
            if not os.path.exists(dequant):
                dequant = os.path.join(directory, "kiln_dequant.safetensors")
        before = len(failures)
        try:
            check_ct(directory, dequant)
            cfg = json.load(open(os.path.join(directory, "config.json")))
            archs = cfg.get("architectures") or []
            if archs:
                check_hf(directory, dequant, any(a.endswith("ForCausalLM") for a in archs))
        except SystemExit:
            raise
        except Exception as e:  # a load error is a failed check, with its reason
            note(False, "%s: %s: %s" % (directory, type(e).__name__, e))
        failed += len(failures) > before
    print("%d passed, %d failed" % (len(args) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
