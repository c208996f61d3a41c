"""kiln.load: a quantized Hugging Face directory (compressed-tensors, including what
`kiln quantize` writes; AutoGPTQ, AutoAWQ) as a transformers model whose quantized
layers run kiln kernels on the stored grid."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, Optional, Union

import torch

from ._lib import KilnError, data_file, ffi, lib, py_error
from .linear import KilnLinear
from .quantize import _set_module
from .recipe import Recipe, context


def _build(directory: str) -> torch.nn.Module:
    """The transformers model of config.json (without its quantization_config), in f32."""
    import transformers

    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            cfg_json = json.load(f)
    except (OSError, ValueError) as e:
        raise KilnError("%s: %s" % (path, e)) from e
    for key in ("quantization_config", "compression_config"):
        cfg_json.pop(key, None)
    archs = cfg_json.get("architectures") or []
    cfg = transformers.AutoConfig.for_model(**cfg_json)
    causal = any(a.endswith("ForCausalLM") for a in archs)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    return auto.from_config(cfg, dtype=torch.float32)


def _tensors(directory: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: Dict[str, torch.Tensor] = {}
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    for f in files:
        if os.path.basename(f).startswith("kiln_"):  # kiln's own side files (dequant refs)
            continue
        out.update(load_file(f))
    return out


def _module_name(model: torch.nn.Module, name: str) -> Optional[str]:
    """The model's module for a checkpoint's layer name (with or without the base
    model's prefix, e.g. ``bert.``)."""
    mods = dict(model.named_modules())
    prefix = getattr(model, "base_model_prefix", "") or ""
    for cand in (name, prefix + "." + name if prefix else None,
                 name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else None):
        if cand and isinstance(mods.get(cand), torch.nn.Linear):
            return cand
    return None


def _load_dense(model: torch.nn.Module, tensors: Dict[str, torch.Tensor], quantized: set,
                directory: str) -> None:
    """Every parameter and buffer that is not a quantized layer's from the files."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    state = model.state_dict()
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "lm_head"):
        tied.add("lm_head.weight")
    with torch.no_grad():
        for key, dst in state.items():
            mod = key.rpartition(".")[0]
            if mod in quantized and key.endswith(".weight"):
                continue
            src = tensors.get(key)
            if src is None and prefix:
                src = tensors.get(key[len(prefix) + 1:]) if key.startswith(prefix + ".") \
                    else tensors.get(prefix + "." + key)
            if src is None:
                if key in tied or key.endswith(("position_ids", "inv_freq")):
                    continue
                raise KilnError("%s: no tensor %s (shape %s) in the model files"
                                % (directory, key, list(dst.shape)))
            if tuple(src.shape) != tuple(dst.shape):
                raise KilnError("%s: tensor %s is %s, the model wants %s"
                                % (directory, key, list(src.shape), list(dst.shape)))
            dst.copy_(src.to(dst.dtype))


def load(directory: "Union[str, os.PathLike[str]]", recipe: "Union[Recipe, str, None]" = None,
         *, target: Optional[str] = None, threads: int = 0) -> torch.nn.Module:
    """A quantized Hugging Face directory (config.json + safetensors;
    docs/checkpoints.md) as a transformers model in f32 whose quantized linear layers
    are :class:`kiln.KilnLinear` on the stored grid: each layer bound as ``kiln eval``
    binds it under ``recipe`` (default recipes/checkpoint/stored-acts.lua: weights as
    stored, activations as the file declares them). Layers the checkpoint keeps dense
    stay torch Linear. The model is in eval mode; the tokenizer is
    ``AutoTokenizer.from_pretrained(directory)``."""
    directory = os.fspath(directory)
    ctx = context(target, threads)
    if recipe is None:
        recipe = Recipe(data_file("stored-acts.lua"), target=target)
    elif not isinstance(recipe, Recipe):
        recipe = Recipe(recipe, target=target)
    out = ffi.new("kiln_py_ckpt **")
    st = lib.kiln_py_ckpt_open(directory.encode(), out)
    if st:
        raise py_error(st)
    ck = ffi.gc(out[0], lib.kiln_py_ckpt_close)
    model = _build(directory)
    layers = {}
    N, K = ffi.new("int64_t *"), ffi.new("int64_t *")
    for i in range(lib.kiln_py_ckpt_nlayers(ck)):
        name = ffi.string(lib.kiln_py_ckpt_layer(ck, i, N, K)).decode()
        mod = _module_name(model, name)
        if mod is None:
            raise KilnError("%s: quantized layer %s is not a Linear of %s"
                            % (directory, name, type(model).__name__))
        lin = model.get_submodule(mod)
        if (lin.out_features, lin.in_features) != (N[0], K[0]):
            raise KilnError("%s: layer %s is %dx%d in the checkpoint, %dx%d in config.json's "
                            "model" % (directory, name, N[0], K[0], lin.out_features,
                                       lin.in_features))
        layers[mod] = (i, name, N[0], K[0])
    _load_dense(model, _tensors(directory), set(layers), directory)
    rh = recipe.handle(ctx)
    for mod, (i, name, n, k) in layers.items():
        lo = ffi.new("kiln_layer **")
        perm = torch.empty(k, dtype=torch.int32)
        has = ffi.new("int *")
        st = lib.kiln_py_ckpt_bind(ctx.ptr, rh, ck, i, lo, ffi.cast("int32_t *", perm.data_ptr()),
                                   has)
        if st:
            raise py_error(st)
        bias = model.get_submodule(mod).bias
        _set_module(model, mod, KilnLinear(ctx, lo[0], name, k, n, bias,
                                           perm.long() if has[0] else None))
    model.eval()
    return model
