"""KilnLinear's C forward and __call__ (kiln._fast, python/csrc/kiln_fast.cpp): which
inputs take it, that it gives the general path's numbers bit for bit, that everything
else falls back to the general path, and that Module.__call__'s hooks, instance forwards
and compile still work."""
from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
import torch

import kiln
import kiln.linear as kl
from conftest import RECIPES

torch.manual_seed(1)


def layer(k: int = 576, n: int = 320, bias: bool = False, recipe: str = "w8a8-int8-dynamic.lua",
          path: Path = RECIPES) -> kiln.KilnLinear:
    m = torch.nn.Sequential(torch.nn.Linear(k, n, bias=bias))
    kiln.quantize_(m, kiln.Recipe(path / recipe), threads=1)
    return m[0]


def no_general(lin: kiln.KilnLinear, monkeypatch: pytest.MonkeyPatch) -> List[torch.Tensor]:
    """Makes the general path record its inputs (the fast path never calls it)."""
    seen: List[torch.Tensor] = []
    general = lin._forward_general
    monkeypatch.setattr(lin, "_forward_general", lambda x: seen.append(x) or general(x))
    return seen


def test_the_package_was_built_with_its_c_forward() -> None:
    # run_pytest.sh installs with --no-build-isolation, so kiln._fast must be there
    assert kl.FAST_PATH_ERROR == "", kl.FAST_PATH_ERROR
    assert kl.DIRECT_CALL, "torch's Module.__call__ check changed: see kl._CALL_CHECK"
    lin = layer()
    assert lin.fast_path and type(lin).forward is kl._Base.forward


@pytest.mark.parametrize("shape", [(1, 576), (5, 576), (2, 3, 576), (576,)])
def test_fast_path_equals_the_general_one_bit_for_bit(shape, monkeypatch) -> None:
    lin = layer()
    x = torch.randn(*shape)
    ref = lin._forward_general(x)
    py = kl.PyLinearBase.forward(lin, x)  # the package's Python forward
    seen = no_general(lin, monkeypatch)
    y = lin(x)
    assert seen == []  # the C path ran
    assert y.shape == shape[:-1] + (320,) and y.dtype is torch.float32
    assert torch.equal(y, ref) and torch.equal(y, py)
    assert torch.equal(lin.forward(x), ref)


def test_inference_mode_no_grad_and_requires_grad_inputs_take_the_fast_path(monkeypatch) -> None:
    lin = layer()
    x = torch.randn(2, 576)
    ref = lin._forward_general(x)
    seen = no_general(lin, monkeypatch)
    with torch.inference_mode():
        xi = x.clone()
        assert torch.equal(lin(xi), ref)
    with torch.no_grad():
        assert torch.equal(lin(x), ref)
    xg = x.clone().requires_grad_()
    y = lin(xg)
    assert torch.equal(y, ref) and not y.requires_grad
    assert torch.equal(lin(torch.nn.Parameter(x.clone())), ref)
    assert seen == []


def test_each_call_gets_its_own_output() -> None:
    """Outputs the caller holds are never written again (a freed one may be reused:
    test_an_output_nothing_holds_is_given_again_and_only_then)."""
    lin = layer()
    x = torch.randn(1, 576)
    y1, y2 = lin(x), lin(x)
    assert y1.data_ptr() != y2.data_ptr() and torch.equal(y1, y2)
    keep = y1.clone()
    y1.add_(1)
    assert torch.equal(lin(x), keep) and torch.equal(y2, keep)


def test_an_output_nothing_holds_is_given_again_and_only_then() -> None:
    """The layer keeps its last small output and gives it again when no one else can see
    it; anything that can still see the old one gets a fresh tensor, its values kept."""
    import weakref

    lin = layer()
    x = torch.randn(1, 576)
    ref = lin(x).clone()
    y = lin(x)
    ptr = y.data_ptr()
    del y
    y = lin(x)  # nothing held the last one: its memory again, the right numbers
    assert y.data_ptr() == ptr and torch.equal(y, ref)

    def holders(y: torch.Tensor):
        yield y.view(-1)               # a view: shares the storage
        yield y.numpy()                # numpy's array keeps the tensor
        yield weakref.ref(y)           # a weak reference could get it back
        yield torch.utils.dlpack.to_dlpack(y)
        yield y.untyped_storage()
        y.note = "mine"                # an attribute: the user's object
        yield None

    n = 0
    for h in holders(y):
        old = y
        old_vals = old.clone()
        del y
        y = lin(x)
        assert y.data_ptr() != old.data_ptr(), f"holder {n} ({type(h).__name__})"
        assert torch.equal(y, ref) and torch.equal(old, old_vals)
        del h
        n += 1
    # an output made in another inference mode is not given in this one
    with torch.inference_mode():
        z = lin(x)
        assert z.is_inference()
        del z
    with torch.no_grad():
        w = lin(x)
        assert not w.is_inference() and torch.equal(w, ref)
    # a resized or grad-requiring old output is not given again
    w.resize_(2, 320)
    del w
    assert lin(x).shape == (1, 320)
    v = lin(x)
    v.requires_grad_(True)
    ptr = v.data_ptr()
    del v
    u = lin(x)
    assert u.data_ptr() != ptr and not u.requires_grad and torch.equal(u, ref)


def test_hooks_added_or_rebound_after_direct_calls_still_run() -> None:
    """call_is_forward remembers its last check; a hook added, a hook dict rebound, a
    global hook or an instance forward set after many direct calls is still seen."""
    from collections import OrderedDict

    lin = layer()
    x = torch.randn(1, 576)
    ref = lin(x)
    for _ in range(3):
        lin(x)
    lin._forward_hooks = OrderedDict({7: lambda m, a, o: o * 3})
    assert torch.equal(lin(x), ref * 3)
    lin._forward_hooks = OrderedDict()
    assert torch.equal(lin(x), ref)
    seen = []
    h = torch.nn.modules.module.register_module_forward_pre_hook(lambda m, a: seen.append(1))
    lin(x)
    h.remove()
    lin(x)
    assert seen == [1]
    saved = torch.nn.modules.module._global_forward_hooks
    torch.nn.modules.module._global_forward_hooks = OrderedDict({1: lambda m, a, o: o + 1})
    try:
        assert torch.equal(lin(x), ref + 1)
    finally:
        torch.nn.modules.module._global_forward_hooks = saved
    assert torch.equal(lin(x), ref)


def test_other_inputs_fall_back_to_the_general_path(monkeypatch) -> None:
    lin = layer()
    x = torch.randn(4, 576)

    class Sub(torch.Tensor):
        pass
    general = lin._forward_general
    cases = [  # input, what the general path gives it
        (torch.randn(576, 4).t(), lambda t: general(t.contiguous())),  # not contiguous
        (torch.randn(4, 1152)[:, ::2], lambda t: general(t.contiguous())),  # strided
        (x.bfloat16(), lambda t: general(t.float()).bfloat16()),
        (x.half(), lambda t: general(t.float()).half()),
        (torch._neg_view(x), lambda t: general(-x)),  # memory holds x, values -x
        (x.as_subclass(Sub), lambda t: general(x)),  # not exactly a Tensor
    ]
    want = [f(t) for t, f in cases]
    seen = no_general(lin, monkeypatch)
    for (t, _), w in zip(cases, want):
        for forward in (lin, lambda t: kl.PyLinearBase.forward(lin, t)):  # C, Python
            n = len(seen)
            y = forward(t)
            assert y.dtype is t.dtype and torch.equal(y, w)
            if forward is lin or t.dtype is not torch.float32 or t.is_neg() \
                    or not t.is_contiguous():  # the Python forward runs subclasses itself
                assert len(seen) == n + 1 and seen[-1] is t  # this one went general
    assert lin(torch.empty(0, 576)).shape == (0, 320)


def test_errors_are_kilnerrors_from_the_general_path() -> None:
    lin = layer(k=64, n=32)
    with pytest.raises(kiln.KilnError, match=r"layer 0 \(32x64\): input of shape \[2, 65\]"):
        lin(torch.randn(2, 65))
    with pytest.raises(kiln.KilnError, match=r"input of shape \[2, 64\] on meta"):
        lin(torch.empty(2, 64, device="meta"))
    with pytest.raises(TypeError, match="one input"):
        lin.forward(torch.randn(1, 64), torch.randn(1, 64))
    with pytest.raises(TypeError, match="unexpected keyword 'x'"):
        lin(x=torch.randn(1, 64))
    with pytest.raises(ValueError, match="bad layer"):
        lin._bind(0, 0, 64, 32, True, True)


def test_a_bias_in_the_kernel_runs_fast_one_after_it_does_not(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "b.lua").write_text(
        'return recipe "b" {\n  rule "*" {\n    weights = int8 { per = "channel" },\n'
        '    activations = int8 { per = "token", dynamic = true },\n'
        '    epilogue = { bias = true },\n  },\n}\n')
    inkernel = layer(bias=True, recipe="b.lua", path=tmp_path)
    assert inkernel.fast_path and inkernel.bias is None
    x = torch.randn(3, 576)
    ref = inkernel._forward_general(x)
    seen = no_general(inkernel, monkeypatch)
    assert torch.equal(inkernel(x), ref) and seen == []
    after = layer(bias=True)  # w8a8: the bias is added after the kernel, in Python
    assert not after.fast_path and after.bias is not None
    assert torch.equal(after(x), kl.PyLinearBase.forward(after, x))
    assert torch.equal(after(x), after._forward_general(x))


def test_module_call_keeps_hooks_instance_forwards_and_compile() -> None:
    lin = layer()
    x = torch.randn(1, 576)
    ref = lin(x)
    seen = []
    h = lin.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    assert torch.equal(lin(x), lin._forward_general(x * 2))
    h.remove()
    h = lin.register_forward_hook(lambda m, args, out: out + 1)
    assert torch.equal(lin(x), ref + 1)
    h.remove()
    h = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: seen.append(m))
    lin(x)
    h.remove()
    assert seen == [lin]
    lin.forward = lambda t: "instance forward"  # as accelerate's hooks wrap forward
    assert lin(x) == "instance forward"
    del lin.forward
    lin._compiled_call_impl = lambda *a, **k: "compiled"  # what Module.compile() sets
    assert lin(x) == "compiled"
    lin._compiled_call_impl = None
    assert torch.equal(lin(x), ref) and torch.equal(lin(input=x), ref)

    class Sub(kiln.KilnLinear):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return super().forward(t) * 0

    lin.__class__ = Sub  # a subclass's forward runs (Module.__call__ finds it)
    assert torch.equal(lin(x), ref * 0)
