#!/usr/bin/env python3
"""tests/generate/render_expected.py — renders each NAME.jinja of templates.tsv with
transformers' own chat-template renderer for one user turn and the generation prompt,
into NAME.expected: the text tests/test_generate.c wants kiln_chat_format to give.
Run with the interop virtualenv (tests/interop/check_compressed_tensors.sh makes it):
  ~/.cache/kiln/interop-venv/bin/python tests/generate/render_expected.py"""
import os
import sys

from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))
# padded on purpose: templates that trim (| trim, .strip()) and those that do not differ
USER = "  Hello, who are you? Écris en français.  "


def main():
    for line in open(os.path.join(HERE, "templates.tsv"), encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        name, family, bos, eos, _ = line.rstrip("\n").split("\t")
        if family == "unknown":
            continue
        tmpl = open(os.path.join(HERE, name + ".jinja"), encoding="utf-8").read()
        out = render_jinja_template([[{"role": "user", "content": USER}]], chat_template=tmpl,
                                    add_generation_prompt=True,
                                    bos_token="" if bos == "-" else bos, eos_token=eos)
        text = out[0][0] if isinstance(out, tuple) else out[0]
        with open(os.path.join(HERE, name + ".expected"), "w", encoding="utf-8") as f:
            f.write(text)
        print(name, repr(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
