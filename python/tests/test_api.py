"""kiln.Recipe / kiln.quantize_ / KilnLinear on small synthetic models: which layers are
replaced, the kernel's numbers through every input path, calibration and methods, and
errors as KilnError with kiln's located message."""
from __future__ import annotations

import os
import types
from pathlib import Path

import pytest
import torch

import kiln
from conftest import RECIPES

torch.manual_seed(0)


class Tiny(torch.nn.Module):
    """Token ids -> an embedding -> two linear layers (names a, b) -> lm_head."""

    def __init__(self, k: int = 256, n: int = 384) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, k)
        self.a = torch.nn.Linear(k, n)
        self.b = torch.nn.Linear(n, k, bias=False)
        self.lm_head = torch.nn.Linear(k, 100, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.b(torch.relu(self.a(self.emb(ids)))))


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def sqnr_db(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum()))


def test_quantize_replaces_the_layers_the_recipe_quantizes(tmp_path: Path) -> None:
    r = kiln.Recipe(write(tmp_path, "r.lua", 'return recipe "t" {\n  ignore = { "b" },\n'
                          '  rule "*" { weights = int8 { per = "channel" }, activations = f16 },\n}\n'))
    m = Tiny()
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        ref = m(ids)
    assert kiln.quantize_(m, r) is m
    assert isinstance(m.a, kiln.KilnLinear) and isinstance(m.lm_head, kiln.KilnLinear)
    assert type(m.b) is torch.nn.Linear  # ignored: stays torch
    assert m.a.weight_format == "int8 sym channel" and m.a.name == "a"
    assert m.a.weight_bytes < 4 * 256 * 384 / 3
    with torch.no_grad():
        y = m(ids)
    assert y.shape == ref.shape
    assert sqnr_db(y, ref) > 30, sqnr_db(y, ref)


def test_every_input_path_gives_the_kernels_numbers() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(576, 1536))
    kiln.quantize_(m, kiln.Recipe(RECIPES / "w8a8-int8-dynamic.lua"))
    lin = m[0]
    x = torch.randn(3, 5, 576)
    with torch.no_grad():
        y = lin(x)  # the one-call path (bias added after: the recipe's kernel has none)
        rows = torch.cat([lin(x[i, j:j + 1]) for i in range(3) for j in range(5)])
        assert torch.equal(y.reshape(15, 1536), rows)  # rows are independent
        xt = torch.randn(576, 15).t()  # not contiguous
        assert torch.equal(lin(xt), lin(xt.contiguous()))
        yb = lin(x.bfloat16())
        assert yb.dtype is torch.bfloat16 and yb.shape == (3, 5, 1536)
        assert sqnr_db(yb.float(), y) > 20
        assert lin(torch.empty(0, 576)).shape == (0, 1536)


def test_one_call_path_passes_the_input_without_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    # the Python forward (PyLinearBase: a package built without kiln._fast); the C one
    # passes x.const_data_ptr() the same way (test_fast.py checks it takes no copy path)
    import kiln.linear as kl
    m = torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False))
    kiln.quantize_(m, kiln.Recipe(RECIPES / "w8a16.lua"))
    seen = []
    real = kl.run_layer_raw
    monkeypatch.setattr(kl, "run_layer_raw", lambda l, x, M, y: seen.append(x) or real(l, x, M, y))
    monkeypatch.setattr(m[0], "forward", types.MethodType(kl.PyLinearBase.forward, m[0]))
    x = torch.randn(4, 64)
    m(x)
    assert seen == [x.data_ptr()]


def test_a_bad_recipe_raises_kilnerror_with_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, "bad.lua", 'return recipe "bad" {\n  rule "*" {\n'
              '    weights = int9 { per = "channel" },\n  },\n}\n')
    with pytest.raises(kiln.KilnError) as e:
        kiln.Recipe(p)
    assert e.value.message.startswith(p + ":3:"), e.value.message
    assert e.value.status == 2
    with pytest.raises(kiln.KilnError, match="no_such.lua"):
        kiln.Recipe(tmp_path / "no_such.lua")


def test_a_bad_input_shape_names_the_layer_and_numbers() -> None:
    m = torch.nn.Sequential(torch.nn.Linear(64, 32))
    kiln.quantize_(m, kiln.Recipe(RECIPES / "w8a16.lua"))
    with pytest.raises(kiln.KilnError, match=r"layer 0 \(32x64\): input of shape \[2, 65\]"):
        m(torch.randn(2, 65))


def test_a_fused_activation_is_refused(tmp_path: Path) -> None:
    r = write(tmp_path, "silu.lua", 'return recipe "s" {\n  rule "*" {\n'
              '    weights = int8 { per = "channel" }, activations = f16,\n'
              '    epilogue = { act = "silu" },\n  },\n}\n')
    with pytest.raises(kiln.KilnError, match="layer 0: the recipe fuses an activation"):
        kiln.quantize_(torch.nn.Sequential(torch.nn.Linear(64, 32)), r)


def test_static_scales_need_calibration_and_take_it() -> None:
    r = kiln.Recipe(RECIPES / "w8a8-int8-static.lua")
    with pytest.raises(kiln.KilnError, match="calibration"):
        kiln.quantize_(Tiny(), r)
    m = Tiny()
    calib = [torch.randint(0, 100, (1, 64)) for _ in range(4)]
    ids = torch.randint(0, 100, (1, 16))
    with torch.no_grad():
        ref = m(ids)
    kiln.quantize_(m, r, calibration=calib)
    assert "a int8 sym tensor" in m.a.description  # static: no "token dynamic"
    with torch.no_grad():
        assert sqnr_db(m(ids), ref) > 20
    # the scale is the calibration's: other rows give other numbers
    m2, m3 = Tiny(), Tiny()
    m3.load_state_dict(m2.state_dict())
    kiln.quantize_(m2, r, calibration=calib)
    kiln.quantize_(m3, r, calibration=[3 * torch.ones(1, 64, dtype=torch.long)])
    with torch.no_grad():
        assert not torch.equal(m2(ids), m3(ids))
    with pytest.raises(kiln.KilnError, match="tokenizer"):
        kiln.quantize_(Tiny(), r, calibration=["text without a tokenizer"])


def test_gptq_runs_on_the_captured_inputs_and_beats_round_to_nearest() -> None:
    """GPTQ minimises the output error on its calibration inputs: on those inputs it is
    closer to f32 than round-to-nearest on the same grid (w4a16-g128-asym)."""
    base = Tiny(k=256, n=256)
    with torch.no_grad():  # correlated inputs, as a model's are
        base.emb.weight.copy_(torch.randn(100, 8) @ torch.randn(8, 256)
                              + 0.05 * torch.randn(100, 256))
    calib = torch.arange(100).reshape(1, 100)
    x = base.emb(calib).detach()
    with torch.no_grad():
        ref = base.a(x)
    errs = {}
    for name, kw in (("w4a16-g128-gptq", {"calibration": calib}), ("w4a16-g128-asym", {})):
        m = Tiny(k=256, n=256)
        m.load_state_dict(base.state_dict())
        kiln.quantize_(m, kiln.Recipe(RECIPES / (name + ".lua")), **kw)
        with torch.no_grad():
            errs[name] = sqnr_db(m.a(x), ref)
    assert errs["w4a16-g128-gptq"] > errs["w4a16-g128-asym"] + 0.5, errs


def test_load_errors_are_kilnerrors(tmp_path: Path) -> None:
    with pytest.raises(kiln.KilnError):
        kiln.load(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(kiln.KilnError):
        kiln.load(tmp_path)


def test_the_library_exports_only_the_public_api() -> None:
    import subprocess
    from kiln import _lib
    out = subprocess.run(["nm", "-D", "--defined-only", str(_lib._path)], capture_output=True,
                         text=True).stdout
    names = {line.split()[-1] for line in out.splitlines() if " T " in line}
    header = (Path(_lib._find("kiln.h", "KILN_HEADER")).read_text()
              + Path(_lib._find("kiln_py.h", "KILN_PY_HEADER")).read_text())
    assert names and all(n.startswith("kiln_") and n + "(" in header for n in names), names
    assert {"kiln_layer_run", "kiln_py_ckpt_bind", "kiln_py_method_run"} <= names
    assert os.path.basename(str(_lib._path)) == "libkiln.so"
