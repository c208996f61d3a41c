"""kiln's numerics in a transformers model: the parts between its linear layers run by
the C code kiln's own forward runs, through python/csrc/kiln_py.h — a Llama's RMSNorm,
RoPE's cos and sin, attention and SiLU·up (model/nets/llama_forward.c), a BERT's
embedding sum, LayerNorm, attention and GELU (model/nets/bert.c) — so the model computes
what ``kiln eval`` / ``kiln generate`` compute, bit for bit, given the same linear layers
(docs/python.md, "kiln's numerics").

PyTorch computes those parts with other sums and other functions (float means in the
norms, float cos/sin tables, SDPA's blocked sums, Sleef's exp): the last bits differ,
and a recipe that rounds activations (int8 per token, f16) turns last-bit differences
into different roundings, so its perplexity differs in the third or fourth digit from
kiln eval's. With kiln's numerics it is the same number."""
from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=None)
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


def _attends_all(mask: Optional[torch.Tensor]) -> bool:
    """Whether a transformers mask lets every token see every token (no padding)."""
    if mask is None:
        return True
    return bool(mask.all() if mask.dtype is torch.bool else (mask == 0).all())


def _bert_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Each sentence of the batch, every token over every token, by kiln_bert_attend."""
    B, nh, T, hd = query.shape
    if key.shape != query.shape or value.shape != query.shape:
        raise KilnError("kiln numerics: BERT attention of queries %s over keys %s"
                        % (list(query.shape), list(key.shape)))
    if not _attends_all(attention_mask):
        raise KilnError("kiln numerics: the attention mask hides tokens (padding): kiln "
                        "attends within one unpadded sentence at a time")
    out = torch.empty(B, T, nh, hd)
    for b in range(B):
        q, k, v = (_f32(t[b].transpose(0, 1), what)
                   for t, what in ((query, "the queries"), (key, "the keys"), (value, "the values")))
        st = lib.kiln_py_bert_attention(_ptr(q), _ptr(k), _ptr(v), T, nh, hd, _ptr(out[b]))
        if st:
            raise py_error(st)
    return out


def kiln_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                   value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                   dropout: float = 0.0, scaling: Optional[float] = None,
                   **kwargs: Any) -> Tuple[torch.Tensor, None]:
    """transformers' attention interface ("kiln"): a decoder's causal grouped-query
    attention by kiln's code for one unpadded sequence (batch 1), as kiln runs models; an
    encoder's (a module that is not causal: BERT) within each unpadded sentence."""
    B, nh, T, hd = query.shape
    nkv, n = key.shape[1], key.shape[2]
    if dropout:
        raise KilnError("kiln numerics: attention dropout %g (the model is in training mode?)"
                        % dropout)
    if scaling is not None and abs(scaling * hd ** 0.5 - 1) > 1e-6:
        raise KilnError("kiln numerics: attention scaling %g is not 1/sqrt(%d)" % (scaling, hd))
    if not getattr(module, "is_causal", True):
        return _bert_attention(query, key, value, attention_mask), None
    if B != 1:
        raise KilnError("kiln numerics: attention runs one sequence at a time (batch %d)" % B)
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


class KilnLayerNorm(torch.nn.Module):
    """LayerNorm as kiln computes it: mean and variance in double, (x - mean) · inv · g + b."""

    def __init__(self, ln: torch.nn.LayerNorm) -> None:
        super().__init__()
        if ln.weight is None or ln.bias is None or len(ln.normalized_shape) != 1:
            raise KilnError("kiln numerics: a LayerNorm over %s without weight and bias"
                            % (ln.normalized_shape,))
        self.weight, self.bias, self.eps = ln.weight, ln.bias, float(ln.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _f32(x, "LayerNorm's input").clone()
        g = _f32(self.weight.detach(), "LayerNorm's weight")
        b = _f32(self.bias.detach(), "LayerNorm's bias")
        D = y.shape[-1]
        lib.kiln_py_layernorm(_ptr(y), y.numel() // D, D, _ptr(g), _ptr(b), self.eps)
        return y


class KilnGELU(torch.nn.Module):
    """GELU as kiln computes it: 0.5 x (1 + erff(x / √2)) with glibc's erff."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _f32(x, "GELU's input").clone()
        lib.kiln_py_gelu(_ptr(y), y.numel())
        return y


class KilnBertEmbeddings(torch.nn.Module):
    """BERT's embeddings as kiln sums them: (word + position) + token type 0, then kiln's
    LayerNorm; one sentence a row of the batch, positions from 0."""

    def __init__(self, emb: torch.nn.Module) -> None:
        super().__init__()
        self.word_embeddings = emb.word_embeddings
        self.position_embeddings = emb.position_embeddings
        self.token_type_embeddings = emb.token_type_embeddings
        self.LayerNorm = KilnLayerNorm(emb.LayerNorm)

    def forward(self, input_ids: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                inputs_embeds: Optional[torch.Tensor] = None,
                past_key_values_length: int = 0) -> torch.Tensor:
        if input_ids is None or inputs_embeds is not None:
            raise KilnError("kiln numerics: BERT's embeddings take input_ids (kiln looks the "
                            "tokens up itself)")
        if token_type_ids is not None and bool(token_type_ids.any()):
            raise KilnError("kiln numerics: token types other than 0 (kiln embeds one "
                            "sentence of type 0)")
        T = input_ids.shape[-1]
        if position_ids is not None and not torch.equal(
                position_ids.reshape(-1, T)[0], torch.arange(T, device=position_ids.device)):
            raise KilnError("kiln numerics: positions other than 0..%d" % (T - 1))
        if past_key_values_length or T > self.position_embeddings.num_embeddings:
            raise KilnError("kiln numerics: %d tokens after %d (the position table has %d)"
                            % (T, past_key_values_length, self.position_embeddings.num_embeddings))
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T]
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])


def _bert_(model: torch.nn.Module) -> None:
    cfg = model.config
    pos = getattr(cfg, "position_embedding_type", "absolute")
    if cfg.hidden_act != "gelu" or pos != "absolute":
        raise KilnError("kiln numerics: BERT with %s and %s positions (kiln runs gelu and "
                        "absolute positions)" % (cfg.hidden_act, pos))
    if getattr(cfg, "is_decoder", False):
        raise KilnError("kiln numerics: a BERT decoder (kiln runs the encoder)")
    for name, mod in list(model.named_modules()):
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        kind = type(mod).__name__
        if kind == "BertEmbeddings":
            setattr(owner, leaf, KilnBertEmbeddings(mod))
        elif isinstance(mod, torch.nn.LayerNorm) and not isinstance(owner, KilnBertEmbeddings):
            setattr(owner, leaf, KilnLayerNorm(mod))
        elif kind == "BertIntermediate":
            mod.intermediate_act_fn = KilnGELU()


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(_IMPL, kiln_attention)
    AttentionMaskInterface.register(_IMPL, sdpa_mask)


def kiln_numerics_(model: torch.nn.Module) -> torch.nn.Module:
    """Makes a transformers model compute the parts between its linear layers with kiln's
    C code, so that on kiln's linear layers (:func:`kiln.quantize_`, :func:`kiln.load`)
    its outputs are the ones ``kiln eval`` computes for the same tokens, bit for bit.

    - a Llama (``LlamaForCausalLM`` / ``LlamaModel``): RMSNorm, RoPE's tables, attention,
      SiLU·mul; one unpadded sequence at a time (batch 1), as kiln runs decoders;
    - a BERT encoder (``BertModel``, MiniLM): the embedding sum, LayerNorm, attention,
      GELU; unpadded sentences (a batch of equal lengths, or one at a time).

    f32 on the CPU. In place; returns the model."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind == "bert":
        _bert_(model)
        _register()
        model.config._attn_implementation = _IMPL
        return model
    if kind != "llama":
        raise KilnError("kiln numerics: %s is %s: kiln's numerics cover the Llama decoder and "
                        "the BERT encoder" % (type(model).__name__, kind or "not a transformers model"))
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
