"""kiln.quantize_: a PyTorch / transformers model's torch.nn.Linear layers onto kiln
kernels, as a recipe says; calibrated recipes run on calibration text the caller gives."""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch

from ._lib import KilnError, ffi, lib, py_error
from .linear import KilnLinear
from .recipe import Context, Recipe, context

#: input rows kept per layer for static activation scales, outlier columns and a
#: rule's method (kiln eval keeps 512 for static scales: KILN_STATIC_ROWS)
CALIB_ROWS = 512

Calibration = Union[Sequence[str], Sequence[torch.Tensor], torch.Tensor, None]


def _ptr(t: Optional[torch.Tensor], ctype: str = "float *") -> Any:
    return ffi.NULL if t is None else ffi.cast(ctype, t.data_ptr())


def _set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _targets(model: torch.nn.Module, recipe: Recipe, ctx: Context) -> Dict[str, torch.nn.Linear]:
    """The model's Linear layers the recipe quantizes (not kept in f32), by qualified
    name: the name kiln's rules match (docs/models.md, "Layer names")."""
    out = {}
    for name, m in model.named_modules():
        if type(m) is torch.nn.Linear and name:
            if recipe.weight_format(name, m.out_features, m.in_features, ctx) != "f32":
                out[name] = m
    return out


def _batches(calibration: Calibration, tokenizer: Any) -> List[torch.Tensor]:
    """The calibration as token-id tensors [1, T] (texts through the tokenizer)."""
    if calibration is None:
        return []
    if isinstance(calibration, torch.Tensor):
        calibration = [calibration]
    out = []
    for item in calibration:
        if isinstance(item, str):
            if tokenizer is None:
                raise KilnError("calibration text needs the model's tokenizer: "
                                "kiln.quantize_(..., tokenizer=tok)")
            item = tokenizer(item, return_tensors="pt")["input_ids"]
        if not isinstance(item, torch.Tensor):
            raise KilnError("calibration: texts or token-id tensors, not %s" % type(item).__name__)
        out.append(item if item.dim() == 2 else item.reshape(1, -1))
    return out


def _capture(model: torch.nn.Module, targets: Dict[str, torch.nn.Linear],
             batches: Iterable[torch.Tensor], rows: int) -> Dict[str, torch.Tensor]:
    """Each target's first `rows` input rows (f32) during an f32 pass over batches,
    captured by forward pre-hooks."""
    got: Dict[str, List[torch.Tensor]] = {n: [] for n in targets}
    have = {n: 0 for n in targets}

    def hook(name: str):
        def pre(_m: torch.nn.Module, args: Any) -> None:
            x = args[0].detach().float().reshape(-1, targets[name].in_features)
            take = min(rows - have[name], x.shape[0])
            if take > 0:
                got[name].append(x[:take].clone())
                have[name] += take
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in targets.items()]
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v).contiguous() for n, v in got.items() if v}


def _method(recipe_h: Any, name: str, w: torch.Tensor, x: Optional[torch.Tensor]) -> Any:
    """The rule's calibrated method on one layer (NULL when none)."""
    if x is None:
        return ffi.NULL
    out = ffi.new("kiln_py_method **")
    st = lib.kiln_py_method_run(recipe_h, name.encode(), _ptr(w), w.shape[0], w.shape[1],
                                _ptr(x), x.shape[0], out)
    if st:
        raise py_error(st)
    return out[0]


def _bind(ctx: Context, recipe: Recipe, name: str, lin: torch.nn.Linear,
          calib: Optional[torch.Tensor]) -> KilnLinear:
    """One Linear as a KilnLinear: method (when its rule has one and there are
    calibration rows), then kiln_layer_create with its static scales from calib."""
    rh = recipe.handle(ctx)
    w = lin.weight.detach().float().contiguous()
    b = None if lin.bias is None else lin.bias.detach().float().contiguous()
    N, K = w.shape
    m = _method(rh, name, w, calib)
    perm = div = None
    try:
        if m != ffi.NULL and calib is not None:
            calib = calib.clone()
            st = lib.kiln_py_method_input(m, _ptr(calib), calib.shape[0])
            if st:
                raise py_error(st)
            p, s = lib.kiln_py_method_in_perm(m), lib.kiln_py_method_in_div(m)
            if p != ffi.NULL:
                perm = torch.frombuffer(ffi.buffer(p, 4 * K), dtype=torch.int32).long().clone()
            if s != ffi.NULL:
                div = torch.frombuffer(ffi.buffer(s, 4 * K), dtype=torch.float32).clone()
        out = ffi.new("kiln_layer **")
        st = lib.kiln_py_layer_create(ctx.ptr, rh, name.encode(), N, K, _ptr(w), _ptr(b),
                                      _ptr(calib), 0 if calib is None else calib.shape[0], m, out)
        if st:
            err = py_error(st)
            if calib is None and "calib" in err.message:
                err = KilnError(err.message + " (pass calibration=[...] to kiln.quantize_)",
                                err.status)
            raise err
    finally:
        lib.kiln_py_method_free(m)
    return KilnLinear(ctx, out[0], name, K, N, b, perm, div)


def quantize_(model: torch.nn.Module, recipe: Union[Recipe, str], *,
              calibration: Calibration = None, tokenizer: Any = None,
              target: Optional[str] = None, threads: int = 0,
              calib_rows: int = CALIB_ROWS) -> torch.nn.Module:
    """Replaces, in place, every ``torch.nn.Linear`` of ``model`` that ``recipe``
    quantizes with a :class:`kiln.KilnLinear` running kiln's CPU kernel; layers the
    recipe ignores (weights f32) stay torch Linear. Returns ``model``.

    The name a rule matches is the module's qualified name
    (``model.layers.0.self_attn.q_proj``, ``encoder.layer.0.attention.self.query``), as
    ``kiln eval`` names the same layers. Kernels are compiled for ``target`` (None: the
    host) through kiln's kernel cache (``$KILN_CACHE_DIR``, else ``~/.cache/kiln``),
    and run on ``threads`` threads (0: ``$KILN_NUM_THREADS``, else every core).

    Calibrated recipes (static activation scales, ``outliers``, ``method = gptq / awq
    / smoothquant``) need ``calibration``: texts (with ``tokenizer``) or token-id
    tensors. Each quantized layer's first ``calib_rows`` input rows are captured with
    forward hooks during one f32 pass; the rule's method then runs on that layer alone
    (kiln's GPTQ / AWQ / SmoothQuant, model/eval/layer_method.c: a per-channel scale
    divides the layer's input at run time instead of being folded into a norm), and
    static scales and outlier columns come from the same rows.

    Errors raise :class:`kiln.KilnError` with kiln's message (the layer and its shape;
    ``FILE:LINE`` for the recipe)."""
    ctx = context(target, threads)
    if not isinstance(recipe, Recipe):
        recipe = Recipe(recipe, target=target)
    targets = _targets(model, recipe, ctx)
    calib = _capture(model, targets, _batches(calibration, tokenizer), calib_rows)
    for name, lin in targets.items():
        _set_module(model, name, _bind(ctx, recipe, name, lin, calib.get(name)))
    return model
