"""The JSON values of a stream (concatenated, or one a line), as kiln's and the peers'
--json outputs are collected by the suite (bench/run_suite.sh, bench/e2e.sh); shared by
bench/summarize.py and bench/e2e_table.py."""
import json


class StreamError(ValueError):
    """Text that is not a JSON stream, located as FILE:LINE."""


def read_values(text, where, flatten=False):
    """Every JSON value in text; with flatten, each top-level array's items instead of it."""
    dec, i, out = json.JSONDecoder(), 0, []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            line = text.count("\n", 0, i) + 1
            raise StreamError(f"{where}:{line}: not JSON: {e.msg}") from None
        if flatten and isinstance(obj, list):
            out.extend(obj)
        else:
            out.append(obj)
