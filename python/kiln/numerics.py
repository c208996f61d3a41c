"""kiln's numerics in a transformers Llama: the parts of the model between its linear
layers — RMSNorm, RoPE's cos and sin, attention, SiLU·up — run by the C code kiln's
own forward runs (model/nets/llama_forward.c, through python/csrc/kiln_py.h), so the
model computes what ``kiln eval`` / ``kiln generate`` compute, bit for bit, given the
same linear layers (docs/python.md, "kiln's numerics").

PyTorch computes those parts with other sums and other exponentials (a float mean in
RMSNorm, float cos/sin tables, SDPA's blocked sums, Sleef's exp): the last bits differ,
and a recipe that rounds activations (int8 per token, f16) turns last-bit differences
into different roundings, so its perplexity differs in the third or fourth digit from
kiln eval's. With kiln's numerics it is the same number."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from ._lib import KilnError, ffi, lib, py_error

_F32 = torch.float32
_IMPL = "kiln"


def _ptr(t: torch.Tensor, kind: str = "float *") -> Any:
    return ffi.cast(kind, t.data_ptr())


def _f32(t: torch.Tensor, what: str) -> torch.Tensor:
    if t.dtype is not _F32 or not t.is_cpu:
        raise KilnError("kiln numerics: %s is %s on %s; kiln's numerics are f32 on the CPU "
                        "(load the model in float32)" % (what, t.dtype, t.device))
    return t.contiguous()


class KilnRMSNorm(torch.nn.Module):
    """RMSNorm as kiln computes it: the sum of squares in double, x · inv · g in f32."""

    def __init__(self, weight: torch.nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _f32(x, "RMSNorm's input").clone()
        g = _f32(self.weight.detach(), "RMSNorm's weight")
        D = y.shape[-1]
        lib.kiln_py_rmsnorm(_ptr(y), y.numel() // D, D, _ptr(g), self.variance_epsilon)
        return y

    def extra_repr(self) -> str:
        return "%s, eps=%s (kiln)" % (tuple(self.weight.shape), self.variance_epsilon)


class KilnRotaryEmbedding(torch.nn.Module):
    """RoPE's cos and sin as kiln makes them (in double, rounded to f32), in the layout
    transformers' apply_rotary_pos_emb takes: [batch, tokens, head_dim], each half the
    same."""

    def __init__(self, head_dim: int, theta: float) -> None:
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self._cs = torch.empty(0, head_dim // 2)
        self._sn = torch.empty(0, head_dim // 2)

    def _table(self, upto: int) -> None:
        if upto <= self._cs.shape[0]:
            return
        n = max(upto, 2 * self._cs.shape[0], 64)
        cs, sn = torch.empty(n, self.head_dim // 2), torch.empty(n, self.head_dim // 2)
        lib.kiln_py_rope_table(n, 0, self.head_dim, self.theta, _ptr(cs), _ptr(sn))
        self._cs, self._sn = cs, sn

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if position_ids.numel() and int(position_ids.min()) < 0:
            raise KilnError("kiln numerics: negative position %d" % int(position_ids.min()))
        self._table(int(position_ids.max()) + 1 if position_ids.numel() else 0)
        c, s = self._cs[position_ids], self._sn[position_ids]
        return torch.cat((c, c), -1).to(x.dtype), torch.cat((s, s), -1).to(x.dtype)


class KilnLlamaMLP(torch.nn.Module):
    """down(silu(gate(x)) · up(x)) with kiln's SiLU·mul (glibc's expf, to the bit)."""

    def __init__(self, mlp: torch.nn.Module) -> None:
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = mlp.gate_proj, mlp.up_proj, mlp.down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _f32(self.gate_proj(x), "gate_proj's output")
        u = _f32(self.up_proj(x), "up_proj's output")
        if g.shape != u.shape:
            raise KilnError("kiln numerics: gate_proj gives %s, up_proj %s"
                            % (list(g.shape), list(u.shape)))
        g = g.clone()  # written in place: never a tensor someone else holds
        lib.kiln_py_silu_mul(_ptr(g), _ptr(u), g.numel())
        return self.down_proj(g)


def _kiln_pairs(hd: int) -> torch.Tensor:
    """transformers' head layout (the two halves of each RoPE pair hd/2 apart) in kiln's
    order (pairs adjacent), the order kiln's attention sums q·k in."""
    half = torch.arange(hd // 2)
    return torch.stack((half, half + hd // 2), 1).reshape(-1)


def _causal(mask: Optional[torch.Tensor], T: int, n: int) -> bool:
    """Whether a transformers mask is plain causal attention of T new tokens over n."""
    if mask is None:
        return True
    if mask.dim() != 4 or mask.shape[0] != 1 or mask.shape[-2:] != (T, n):
        return False
    want = torch.ones(T, n, dtype=torch.bool).tril(n - T)
    m = mask[0, 0]
    return bool(torch.equal(m, want) if m.dtype is torch.bool else torch.equal(m == 0, want))


def kiln_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                   dropout: float = 0.0, scaling: Optional[float] = None,
                   **kwargs: Any) -> Tuple[torch.Tensor, None]:
    """transformers' attention interface ("kiln"): causal grouped-query attention by kiln's
    code, for one unpadded sequence (batch 1), as kiln runs models."""
    B, nh, T, hd = query.shape
    nkv, n = key.shape[1], key.shape[2]
    if B != 1:
        raise KilnError("kiln numerics: attention runs one sequence at a time (batch %d)" % B)
    if dropout:
        raise KilnError("kiln numerics: attention dropout %g (the model is in training mode?)"
                        % dropout)
    if scaling is not None and abs(scaling * hd ** 0.5 - 1) > 1e-6:
        raise KilnError("kiln numerics: attention scaling %g is not 1/sqrt(%d)" % (scaling, hd))
    if not _causal(attention_mask, T, n):
        raise KilnError("kiln numerics: the attention mask is not causal over one unpadded "
                        "sequence (%d tokens after %d)" % (T, n - T))
    perm = _kiln_pairs(hd)
    q = _f32(query[0].transpose(0, 1)[..., perm], "the queries")
    k = _f32(key[0].transpose(0, 1)[..., perm], "the keys")
    v = _f32(value[0].transpose(0, 1), "the values")
    out = torch.empty(T, nh, hd)
    st = lib.kiln_py_attention(_ptr(q), _ptr(k), _ptr(v), T, n, nh, nkv, hd, _ptr(out))
    if st:
        raise py_error(st)
    return out.unsqueeze(0), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(_IMPL, kiln_attention)
    AttentionMaskInterface.register(_IMPL, sdpa_mask)


def kiln_numerics_(model: torch.nn.Module) -> torch.nn.Module:
    """Makes a transformers Llama (``LlamaForCausalLM`` / ``LlamaModel``, f32) compute the
    parts between its linear layers with kiln's C code — RMSNorm, RoPE's tables,
    attention, SiLU·mul — so that, on kiln's linear layers (:func:`kiln.quantize_`,
    :func:`kiln.load`), its logits are the ones ``kiln eval`` computes for the same
    tokens, bit for bit. In place; returns the model. Runs one unpadded sequence at a
    time (batch 1), as kiln does."""
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) != "llama":
        raise KilnError("kiln numerics: %s is not a Llama (kiln's numerics cover the Llama "
                        "forward)" % type(model).__name__)
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default")
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", None))
    if rope_type != "default" or theta is None:
        raise KilnError("kiln numerics: RoPE type %r (kiln runs the default RoPE)" % rope_type)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if hd % 2:
        raise KilnError("kiln numerics: head dimension %d is odd" % hd)
    if cfg.hidden_act != "silu":
        raise KilnError("kiln numerics: activation %r (Llama's is silu)" % cfg.hidden_act)
    base = model.model if hasattr(model, "model") else model
    _register()
    for name, mod in list(model.named_modules()):
        kind = type(mod).__name__
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        if kind == "LlamaRMSNorm":
            setattr(owner, leaf, KilnRMSNorm(mod.weight, float(mod.variance_epsilon)))
        elif kind == "LlamaMLP":
            setattr(owner, leaf, KilnLlamaMLP(mod))
    base.rotary_emb = KilnRotaryEmbedding(hd, float(theta))
    model.config._attn_implementation = _IMPL
    return model
