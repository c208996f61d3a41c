#!/usr/bin/env python3
# tests/ckpt/make_fixtures.py — writes tiny quantized checkpoints in the layouts other
# tools store (compressed-tensors pack/int/naive/float-quantized, AutoGPTQ v1/v2, AutoAWQ
# GEMM), tiny Hugging Face Llama and BERT directories, and byte-level BPE tokenizer.json
# files, each with an independently computed numpy reference (test_ckpt_read.c reads them).
# numpy only. Usage: make_fixtures.py OUTDIR
#
# Every checkpoint NAME is a directory OUTDIR/NAME plus OUTDIR/NAME.ref.safetensors holding,
# per quantized module M: "M" = the f32 weight [N, K] dequantized by the layout's documented
# formula from the integer codes *before* packing (so packing bugs cannot cancel out),
# "M.bias" when it has one, "plain:T" = the f32 value of each plain tensor T, and metadata
# "format", "spec.M" (kiln's spec text), "gidx.M" ("1": act-order g_idx kept), "ignore".
import json
import os
import struct
import sys

import numpy as np

OUT = sys.argv[1] if len(sys.argv) > 1 else "ckpt-fixtures"
rng = np.random.default_rng(20240607)

# ------------------------------------------------------------------ safetensors


def bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


ST_NAMES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
            np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64",
            np.dtype(np.uint16): "BF16"}


def st_write(path, tensors, meta=None):
    """tensors: list of (name, array[, dtype name]); uint16 arrays are bf16 bits."""
    hdr, blobs, off = {}, [], 0
    if meta:
        hdr["__metadata__"] = meta
    for t in tensors:
        name, a = t[0], np.ascontiguousarray(t[1])
        dt = t[2] if len(t) > 2 else ST_NAMES[a.dtype]
        b = a.tobytes()
        hdr[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


class Fixture:
    """One checkpoint directory and its reference file."""

    def __init__(self, name, fmt):
        self.name, self.dir = name, os.path.join(OUT, name)
        os.makedirs(self.dir, exist_ok=True)
        self.tensors, self.ref, self.meta = [], [], {"format": fmt}

    def module(self, m, ref, spec, bias=None, gidx=False):
        self.ref.append((m, ref.astype(np.float32)))
        self.meta["spec." + m] = spec
        if gidx:
            self.meta["gidx." + m] = "1"
        if bias is not None:
            self.ref.append((m + ".bias", bias.astype(np.float32)))

    def plain(self, name, value_f32, stored):
        """stored: (array[, dtype]) as written; value_f32 its exact f32 value."""
        self.tensors.append((name,) + stored)
        self.ref.append(("plain:" + name, np.asarray(value_f32, np.float32)))

    def finish(self, config, files=None):
        write_json(os.path.join(self.dir, "config.json"), config)
        if files is None:
            st_write(os.path.join(self.dir, "model.safetensors"), self.tensors, {"format": "pt"})
        st_write(os.path.join(OUT, self.name + ".ref.safetensors"), self.ref, self.meta)


def add_plain_tensors(fx):
    """An embedding in bf16 and a norm in f16: plain tensors convert exactly to f32."""
    e = bf16_bits(rng.standard_normal((10, 8)).astype(np.float32))
    fx.plain("model.embed_tokens.weight", bf16_value(e), (e, "BF16"))
    g = (1 + 0.1 * rng.standard_normal(8)).astype(np.float16)
    fx.plain("model.norm.weight", g.astype(np.float32), (g,))


# ------------------------------------------------------------------ FP8 tables


def fp8_table(fmt):
    """Value of each byte (NaN for NaN/Inf codes): E4M3 "fn" or E5M2 (OCP FP8)."""
    v = np.zeros(256, np.float64)
    for b in range(256):
        s = -1.0 if b & 0x80 else 1.0
        if fmt == "e4m3":
            e, m = (b >> 3) & 15, b & 7
            if e == 15 and m == 7:
                v[b] = np.nan
            elif e == 0:
                v[b] = s * m / 8 * 2.0 ** -6
            else:
                v[b] = s * (1 + m / 8) * 2.0 ** (e - 7)
        else:
            e, m = (b >> 2) & 31, b & 3
            if e == 31:
                v[b] = np.nan
            elif e == 0:
                v[b] = s * m / 4 * 2.0 ** -14
            else:
                v[b] = s * (1 + m / 4) * 2.0 ** (e - 15)
    return v.astype(np.float32)


# ------------------------------------------------------------------ compressed-tensors
# Following compressed_tensors (pack_quantized, naive_quantized, quantization/lifecycle/
# forward.py): integer codes are signed ([-2^(b-1), 2^(b-1)-1]) for symmetric and
# asymmetric alike; value = (q - zero_point) * scale; pack_to_int32 adds 2^(b-1) and packs
# 32/b codes per int32 along the last dim, element i at bits [i*b, (i+1)*b), the last dim
# padded with zeros; an asymmetric group/channel zero point is packed the same way along
# dim 0 ([ceil(N/(32/b)), ngroups]); weight_g_idx[k] is the group of input column k.


def ct_pack(values, bits, packed_dim=1):
    v = (values.astype(np.int64) + (1 << (bits - 1))).astype(np.uint32)
    if packed_dim == 0:
        v = v.T
    pf = 32 // bits
    rows, cols = v.shape
    pad = -cols % pf
    v = np.concatenate([v, np.zeros((rows, pad), np.uint32)], 1)
    v = v.reshape(rows, -1, pf)
    packed = np.zeros(v.shape[:2], np.uint32)
    for i in range(pf):
        packed |= v[:, :, i] << np.uint32(i * bits)
    packed = packed.view(np.int32)
    return packed.T.copy() if packed_dim == 0 else packed


def ct_args(bits, sym, strategy, group=None, typ="int", dynamic=False, actorder=None):
    a = {"num_bits": bits, "type": typ, "symmetric": sym, "strategy": strategy,
         "group_size": group, "block_structure": None, "dynamic": dynamic,
         "actorder": actorder, "observer": "minmax", "observer_kwargs": {}}
    return a


def ct_config(fmt, groups, ignore, kv=None):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "quantization_config": {"quant_method": "compressed-tensors", "format": fmt,
                                    "quantization_status": "compressed",
                                    "global_compression_ratio": None,
                                    "config_groups": groups, "ignore": ignore,
                                    "kv_cache_scheme": kv}}


def group_of(K, group, perm=None):
    """g_idx: column k's group; perm (act order) shuffles which columns share a group."""
    g = np.arange(K) // group
    if perm is not None:
        g = g[np.argsort(perm)]
    return g.astype(np.int32)


def scale_dtype_store(s, kind):
    """Stores scales as f16, bf16 or f32 and returns (stored tuple, exact f32 value)."""
    if kind == "f16":
        h = s.astype(np.float16)
        return (h,), h.astype(np.float32)
    if kind == "bf16":
        b = bf16_bits(s.astype(np.float32))
        return (b, "BF16"), bf16_value(b)
    f = s.astype(np.float32)
    return (f,), f


def ct_int_module(fx, m, N, K, bits, sym, strategy, group=None, packed=True, actorder=False,
                  sdtype="bf16", bias=False):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = rng.integers(lo, hi + 1, (N, K))
    ng = 1 if strategy in ("channel", "tensor") else -(-K // group)
    srows = 1 if strategy == "tensor" else N
    s = rng.uniform(0.01, 0.05, (srows, ng))
    sst, sv = scale_dtype_store(s, sdtype)
    z = None if sym else rng.integers(lo, hi + 1, (srows, ng))
    gidx = group_of(K, group, rng.permutation(K)) if actorder else (
        np.arange(K) // group if strategy == "group" else np.zeros(K, np.int64))
    # reference: scale and zero point of each element's (row, group)
    Sf = sv[np.arange(N) % srows][:, gidx] if srows > 1 else np.broadcast_to(sv[0, gidx], (N, K))
    Z = 0 if z is None else (z[np.arange(N) % srows][:, gidx] if srows > 1 else z[0, gidx])
    ref = np.float32(Sf) * (q - Z).astype(np.float32)
    if packed:
        fx.tensors.append((m + ".weight_packed", ct_pack(q, bits)))
        fx.tensors.append((m + ".weight_shape", np.array([N, K], np.int64)))
    else:
        fx.tensors.append((m + ".weight", q.astype(np.int8)))
    shape = (1,) if strategy == "tensor" else (N, ng)
    fx.tensors.append((m + ".weight_scale", sst[0].reshape(shape)) + sst[1:])
    if z is not None:
        if packed and strategy in ("group", "channel"):
            fx.tensors.append((m + ".weight_zero_point", ct_pack(z, bits, packed_dim=0)))
        else:
            fx.tensors.append((m + ".weight_zero_point", z.astype(np.int8).reshape(shape)))
    if actorder:
        fx.tensors.append((m + ".weight_g_idx", gidx.astype(np.int32)))
    b = None
    if bias:
        b = rng.standard_normal(N).astype(np.float16)
        fx.tensors.append((m + ".bias", b))
    gran = "group=%d" % group if strategy == "group" else strategy
    fx.module(m, ref, "int%d %s %s" % (bits, "sym" if sym else "asym", gran), b, actorder)


def fx_ct_pack_int4():
    fx = Fixture("ct-pack-int4", "pack-quantized")
    L = "model.layers.0."
    ct_int_module(fx, L + "self_attn.q_proj", 16, 64, 4, True, "group", 32)
    ct_int_module(fx, L + "self_attn.k_proj", 8, 64, 4, True, "group", 16, actorder=True,
                  sdtype="f16")
    ct_int_module(fx, L + "mlp.down_proj", 12, 44, 4, True, "channel", sdtype="f32", bias=True)
    add_plain_tensors(fx)
    w = rng.standard_normal((10, 8)).astype(np.float32)
    fx.plain("lm_head.weight", w, (w,))
    g = {"group_0": {"targets": ["Linear"], "weights": ct_args(4, True, "group", 32),
                     "input_activations": None, "output_activations": None},
         "group_1": {"targets": ["re:.*k_proj$"],
                     "weights": ct_args(4, True, "group", 16, actorder="group"),
                     "input_activations": None, "output_activations": None},
         "group_2": {"targets": ["model.layers.0.mlp.down_proj"],
                     "weights": ct_args(4, True, "channel"),
                     "input_activations": None, "output_activations": None}}
    fx.meta["ignore"] = "lm_head"
    fx.finish(ct_config("pack-quantized", g, ["lm_head"]))


def fx_ct_pack_asym():
    fx = Fixture("ct-pack-asym", "pack-quantized")
    L = "model.layers.0."
    # N = 12: the zero points' packed dim 0 is padded (ceil(12/8) = 2 rows)
    ct_int_module(fx, L + "self_attn.q_proj", 12, 48, 4, False, "group", 16)
    ct_int_module(fx, L + "self_attn.o_proj", 20, 40, 4, False, "channel", sdtype="f16")
    ct_int_module(fx, L + "mlp.up_proj", 8, 32, 8, False, "group", 16)
    g = {"group_0": {"targets": ["re:.*q_proj"], "weights": ct_args(4, False, "group", 16),
                     "input_activations": None},
         "group_1": {"targets": ["re:.*o_proj$"], "weights": ct_args(4, False, "channel"),
                     "input_activations": None},
         "group_2": {"targets": ["re:.*mlp\\.up_proj"], "weights": ct_args(8, False, "group", 16),
                     "input_activations": None}}
    fx.finish(ct_config("pack-quantized", g, []))


def fx_ct_int8(name, fmt):
    fx = Fixture(name, fmt)
    L = "model.layers.1."
    ct_int_module(fx, L + "self_attn.v_proj", 16, 32, 8, True, "channel", packed=False)
    ct_int_module(fx, L + "mlp.gate_proj", 8, 32, 8, False, "tensor", packed=False, sdtype="f32")
    act = ct_args(8, True, "token", dynamic=True)
    g = {"group_0": {"targets": ["re:.*v_proj"], "weights": ct_args(8, True, "channel"),
                     "input_activations": act},
         "group_1": {"targets": ["re:.*gate_proj"], "weights": ct_args(8, False, "tensor"),
                     "input_activations": act}}
    add_plain_tensors(fx)
    fx.meta["act"] = "int8 sym token dynamic"
    fx.finish(ct_config(fmt, g, ["lm_head"]))


def fx_ct_fp8():
    fx = Fixture("ct-fp8", "float-quantized")
    L = "model.layers.0."
    e4, e5 = fp8_table("e4m3"), fp8_table("e5m2")
    ok4 = np.array([b for b in range(256) if not np.isnan(e4[b])], np.uint8)
    ok5 = np.array([b for b in range(256) if not np.isnan(e5[b])], np.uint8)
    # channel scales, E4M3
    N, K = 16, 32
    c = rng.choice(ok4, (N, K))
    s = rng.uniform(0.001, 0.01, (N, 1)).astype(np.float32)
    fx.tensors += [(L + "self_attn.q_proj.weight", c, "F8_E4M3"),
                   (L + "self_attn.q_proj.weight_scale", s)]
    fx.module(L + "self_attn.q_proj", e4[c] * s, "fp8_e4m3 sym channel")
    # tensor scale, E5M2, with a static per-tensor input scale (read into act_scale)
    c = rng.choice(ok5, (8, 32))
    s = np.array([0.0123], np.float32)
    fx.tensors += [(L + "self_attn.k_proj.weight", c, "F8_E5M2"),
                   (L + "self_attn.k_proj.weight_scale", s),
                   (L + "self_attn.k_proj.input_scale", np.array([0.5], np.float32))]
    fx.module(L + "self_attn.k_proj", e5[c] * s[0], "fp8_e5m2 sym tensor")
    fx.meta["act." + L + "self_attn.k_proj"] = "fp8_e4m3 sym tensor"
    fx.meta["act_scale." + L + "self_attn.k_proj"] = "0.5"
    # 2-D blocks [8, 16] on a [20, 40] weight (both ragged): read as groups of 16 columns
    N, K, bh, bw = 20, 40, 8, 16
    c = rng.choice(ok4, (N, K))
    sb = rng.uniform(0.001, 0.01, (-(-N // bh), -(-K // bw))).astype(np.float32)
    S = sb[np.arange(N) // bh][:, np.arange(K) // bw]
    fx.tensors += [(L + "mlp.down_proj.weight", c, "F8_E4M3"),
                   (L + "mlp.down_proj.weight_scale", sb)]
    fx.module(L + "mlp.down_proj", e4[c] * S, "fp8_e4m3 sym group=16")
    fx.plain(L + "self_attn.k_scale", np.array([0.25], np.float32), (np.array([0.25], np.float32),))
    blk = ct_args(8, True, "block", typ="float")
    blk["block_structure"] = [bh, bw]
    g = {"group_0": {"targets": ["re:.*q_proj"], "weights": ct_args(8, True, "channel", typ="float"),
                     "input_activations": ct_args(8, True, "token", typ="float", dynamic=True)},
         "group_1": {"targets": ["re:.*k_proj"], "weights": ct_args(8, True, "tensor", typ="float"),
                     "input_activations": ct_args(8, True, "tensor", typ="float")},
         "group_2": {"targets": ["re:.*down_proj"], "weights": blk, "input_activations": None}}
    kv = ct_args(8, True, "tensor", typ="float")
    fx.meta["kv"] = "fp8_e4m3 sym tensor"
    fx.meta["act"] = "fp8_e4m3 sym token dynamic"
    fx.finish(ct_config("float-quantized", g, ["lm_head"], kv))


def fx_ct_sharded():
    """pack-quantized split over two files with model.safetensors.index.json."""
    fx = Fixture("ct-sharded", "pack-quantized")
    for i in range(2):
        ct_int_module(fx, "model.layers.%d.mlp.up_proj" % i, 16, 64, 4, True, "group", 32)
    add_plain_tensors(fx)
    half = len(fx.tensors) // 2
    files = {"model-00001-of-00002.safetensors": fx.tensors[:half],
             "model-00002-of-00002.safetensors": fx.tensors[half:]}
    wm = {}
    for fn, ts in files.items():
        st_write(os.path.join(fx.dir, fn), ts)
        for t in ts:
            wm[t[0]] = fn
    write_json(os.path.join(fx.dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": 0}, "weight_map": wm})
    g = {"group_0": {"targets": ["Linear"], "weights": ct_args(4, True, "group", 32)}}
    fx.finish(ct_config("pack-quantized", g, ["lm_head"]), files=True)


# ------------------------------------------------------------------ AutoGPTQ
# Following AutoGPTQ's QuantLinear.pack / GPTQModel: qweight int32 [K/pf, N] packs input
# rows k = r*pf + i at bits [i*b, (i+1)*b) (pf = 32/b); qzeros int32 [G, N/pf] packs output
# columns the same way; scales f16 [G, N]; g_idx int32 [K]; W[n,k] = scales[g_idx[k], n] *
# (q[k,n] - zero[g_idx[k], n]). checkpoint_format "gptq" (v1) stores zero - 1; "gptq_v2"
# the zero itself.


def pack_rows(codes, bits):
    """codes [R, C] unsigned -> int32 [R/pf, C], row r*pf+i at bits i*b."""
    pf = 32 // bits
    u = codes.astype(np.uint32).reshape(-1, pf, codes.shape[1])
    out = np.zeros((u.shape[0], u.shape[2]), np.uint32)
    for i in range(pf):
        out |= u[:, i, :] << np.uint32(i * bits)
    return out.view(np.int32)


def pack_cols(codes, bits, order=None):
    """codes [R, C] unsigned -> int32 [R, C/pf]; slot i of word c holds column
    c*pf + order[i] (order: identity for GPTQ, AWQ's interleave for AWQ)."""
    pf = 32 // bits
    order = order or list(range(pf))
    u = codes.astype(np.uint32) & np.uint32((1 << bits) - 1)
    out = np.zeros((u.shape[0], u.shape[1] // pf), np.uint32)
    for c in range(u.shape[1] // pf):
        for i in range(pf):
            out[:, c] |= u[:, c * pf + order[i]] << np.uint32(i * bits)
    return out.view(np.int32)


def gptq_module(fx, m, N, K, bits, group, sym, actorder, v2, bias=True):
    maxq = (1 << bits) - 1
    G = 1 if group == -1 else K // group
    gs = K if group == -1 else group
    q = rng.integers(0, maxq + 1, (K, N))                 # [K, N], as GPTQ keeps it
    if sym:
        z = np.full((G, N), (maxq + 1) // 2)
    else:  # v1 cannot store zero 0 (zero - 1 = -1 spills into the next column)
        z = rng.integers(0 if v2 else 1, maxq + 1, (G, N))
    s = rng.uniform(0.01, 0.05, (G, N)).astype(np.float16)
    perm = rng.permutation(K) if actorder else None
    g_idx = group_of(K, gs, perm)
    ref = (np.float32(s.astype(np.float32)[g_idx, :]) *
           (q - z[g_idx, :]).astype(np.float32)).T              # [N, K]
    stored_z = z if v2 else z - 1
    fx.tensors += [(m + ".qweight", pack_rows(q, bits)),
                   (m + ".qzeros", pack_cols(stored_z, bits)),
                   (m + ".scales", s), (m + ".g_idx", g_idx)]
    b = None
    if bias:
        b = rng.standard_normal(N).astype(np.float16)
        fx.tensors.append((m + ".bias", b))
    # symmetric GPTQ (all zeros 2^(b-1)) reads as kiln's signed symmetric codes
    gran = "channel" if group == -1 else "group=%d" % group
    fx.module(m, ref, "int%d %s %s" % (bits, "sym" if sym else "asym", gran), b, actorder)


def fx_gptq(name, bits, group, sym, actorder, v2, where):
    fx = Fixture(name, "gptq")
    L = "model.layers.0."
    gptq_module(fx, L + "self_attn.q_proj", 16, 64, bits, group, sym, actorder, v2)
    gptq_module(fx, L + "mlp.down_proj", 8, 128, bits, group, sym, actorder, v2, bias=False)
    add_plain_tensors(fx)
    qc = {"bits": bits, "group_size": group, "damp_percent": 0.01, "desc_act": actorder,
          "static_groups": False, "sym": sym, "true_sequential": True, "quant_method": "gptq"}
    if v2:
        qc["checkpoint_format"] = "gptq_v2"
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    if where == "config":
        cfg["quantization_config"] = qc
    else:
        write_json(os.path.join(fx.dir, "quantize_config.json"), qc)
    fx.finish(cfg)


# ------------------------------------------------------------------ AutoAWQ
# Following AutoAWQ's WQLinear_GEMM.from_linear: qweight int32 [K, N/8], slot i of word c
# holds output column c*8 + [0,2,4,6,1,3,5,7][i]; qzeros int32 [K/group, N/8] the same;
# scales f16 [K/group, N]; W[n,k] = (q[k,n] - zero[k/group, n]) * scales[k/group, n].

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def fx_awq():
    fx = Fixture("awq-gemm", "awq")
    for m, N, K in [("model.layers.0.self_attn.q_proj", 16, 64),
                    ("model.layers.0.mlp.gate_proj", 24, 32)]:
        G = K // 32
        q = rng.integers(0, 16, (K, N))
        z = rng.integers(0, 16, (G, N))
        s = rng.uniform(0.01, 0.05, (G, N)).astype(np.float16)
        gi = np.arange(K) // 32
        ref = (np.float32(s.astype(np.float32)[gi, :]) * (q - z[gi, :]).astype(np.float32)).T
        b = rng.standard_normal(N).astype(np.float16)
        fx.tensors += [(m + ".qweight", pack_cols(q, 4, AWQ_ORDER)),
                       (m + ".qzeros", pack_cols(z, 4, AWQ_ORDER)),
                       (m + ".scales", s), (m + ".bias", b)]
        fx.module(m, ref, "int4 asym group=32", b)
    add_plain_tensors(fx)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32,
                                   "zero_point": True, "version": "gemm",
                                   "modules_to_not_convert": ["lm_head"]}}
    fx.meta["ignore"] = "lm_head"
    fx.finish(cfg)


# ------------------------------------------------------------------ malformed inputs


def fx_bad():
    """Small broken checkpoints; test_ckpt_read expects an error naming the tensor."""
    def one(name, mutate, fmt="pack-quantized"):
        fx = Fixture(name, "bad")
        ct_int_module(fx, "model.layers.0.self_attn.q_proj", 16, 64, 4, False, "group", 32)
        mutate(fx)
        g = {"group_0": {"targets": ["Linear"], "weights": ct_args(4, False, "group", 32)}}
        fx.finish(ct_config(fmt, g, []))

    def scale_shape(fx):
        i = [t[0] for t in fx.tensors].index("model.layers.0.self_attn.q_proj.weight_scale")
        fx.tensors[i] = (fx.tensors[i][0], fx.tensors[i][1][:, :1]) + fx.tensors[i][2:]

    def packed_cols(fx):
        i = [t[0] for t in fx.tensors].index("model.layers.0.self_attn.q_proj.weight_packed")
        fx.tensors[i] = (fx.tensors[i][0], fx.tensors[i][1][:, :5])

    def huge_shape(fx):
        i = [t[0] for t in fx.tensors].index("model.layers.0.self_attn.q_proj.weight_shape")
        fx.tensors[i] = (fx.tensors[i][0], np.array([1 << 40, 1 << 40], np.int64))

    def no_zero(fx):
        fx.tensors = [t for t in fx.tensors if not t[0].endswith("weight_zero_point")]

    one("bad-scale-shape", scale_shape)
    one("bad-packed-cols", packed_cols)
    one("bad-huge-shape", huge_shape)
    one("bad-no-zero", no_zero)

    fx = Fixture("bad-gptq-qzeros", "bad")
    gptq_module(fx, "model.layers.0.self_attn.q_proj", 16, 64, 4, 32, False, False, False)
    i = [t[0] for t in fx.tensors].index("model.layers.0.self_attn.q_proj.qzeros")
    fx.tensors[i] = (fx.tensors[i][0], fx.tensors[i][1][:1])
    fx.finish({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                       "desc_act": False, "sym": False}})

    fx = Fixture("bad-gidx-range", "bad")
    gptq_module(fx, "model.layers.0.self_attn.q_proj", 16, 64, 4, 32, True, True, False)
    i = [t[0] for t in fx.tensors].index("model.layers.0.self_attn.q_proj.g_idx")
    gi = fx.tensors[i][1].copy()
    gi[5] = 7
    fx.tensors[i] = (fx.tensors[i][0], gi)
    fx.finish({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 32,
                                       "desc_act": True, "sym": True}})


# ------------------------------------------------------------------ tokenizers


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld", "1 2",
          "Ġ h", "Ġh e", "Ġhe ll", "Ġhell o", "e l"]
ADDED = ["<|im_start|>", "<|im_end|>"]


def make_vocab():
    vocab = {}
    for b in range(256):  # id = the byte
        vocab[B2U[b]] = len(vocab)
    for mg in MERGES:
        a, b = mg.split(" ")
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab


def ref_bpe(text, vocab, split_digits):
    """Reference byte-level BPE for ASCII text: HF's added-token split, optional
    per-digit split, the GPT-2 pattern, then merges by rank."""
    import re
    rank = {tuple(m.split(" ")): i for i, m in enumerate(MERGES)}
    pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")
    ids = []
    for part in re.split("(" + "|".join(re.escape(a) for a in ADDED) + ")", text):
        if part in ADDED:
            ids.append(len(vocab) + ADDED.index(part))
            continue
        pieces = re.split(r"(\d)", part) if split_digits else [part]
        for piece in pieces:
            for w in pat.findall(piece):
                sym = [B2U[b] for b in w.encode()]
                while len(sym) > 1:
                    best = min(range(len(sym) - 1),
                               key=lambda i: rank.get((sym[i], sym[i + 1]), 1 << 30))
                    if (sym[best], sym[best + 1]) not in rank:
                        break
                    sym[best:best + 2] = [sym[best] + sym[best + 1]]
                ids += [vocab[s] for s in sym]
    return ids


TOK_TEXT = "<|im_start|>hello world 123, hello!\n  hello<|im_end|> he'll"


def tokenizer_json(split_digits, list_merges):
    vocab = make_vocab()
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
          "use_regex": True}
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                 bl]} if split_digits else bl
    merges = [m.split(" ") for m in MERGES] if list_merges else MERGES
    added = [{"id": len(vocab) + i, "content": a, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for i, a in enumerate(ADDED)]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                      "merges": merges}}, vocab


def fx_tokenizers():
    exp = {}
    for name, sd, lm in [("tok-bytelevel", False, False), ("tok-digits", True, True)]:
        tj, vocab = tokenizer_json(sd, lm)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        write_json(os.path.join(d, "tokenizer.json"), tj)
        exp[name] = ref_bpe(TOK_TEXT, vocab, sd)
    exp["text"] = TOK_TEXT
    write_json(os.path.join(OUT, "tok-expected.json"), exp)


# ------------------------------------------------------------------ tiny Llama (HF)
# Hugging Face LlamaForCausalLM semantics: RMSNorm, rotate-half RoPE on q/k (pairs (j,
# j + hd/2) with inv_freq theta^(-2j/hd)), grouped-query attention, SiLU-gated MLP.

LL = dict(D=64, F=128, L=2, H=4, KV=2, V=None, eps=1e-5, theta=10000.0)
LL_IDS = [256 + 2, 72, 101, 108, 108, 111, 3, 263, 17, 200, 5]


def llama_weights():
    vocab = make_vocab()
    V = len(vocab) + len(ADDED)
    D, F, H, KV = LL["D"], LL["F"], LL["H"], LL["KV"]
    hd = D // H
    W = {"model.embed_tokens.weight": rng.standard_normal((V, D)) * 0.5,
         "model.norm.weight": 1 + 0.1 * rng.standard_normal(D)}
    for i in range(LL["L"]):
        p = "model.layers.%d." % i
        W[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        W[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
        for n, (r, c) in {"self_attn.q_proj": (D, D), "self_attn.k_proj": (KV * hd, D),
                          "self_attn.v_proj": (KV * hd, D), "self_attn.o_proj": (D, D),
                          "mlp.gate_proj": (F, D), "mlp.up_proj": (F, D),
                          "mlp.down_proj": (D, F)}.items():
            W[p + n + ".weight"] = rng.standard_normal((r, c)) / np.sqrt(c)
    return {k: v.astype(np.float32) for k, v in W.items()}, V


def llama_forward(W, ids):
    D, H, KV, eps, theta = LL["D"], LL["H"], LL["KV"], LL["eps"], LL["theta"]
    hd = D // H
    W = {k: v.astype(np.float64) for k, v in W.items()}
    T = len(ids)
    x = W["model.embed_tokens.weight"][ids]

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):  # [T, heads, hd], rotate_half
        a, b = v[..., :hd // 2], v[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(LL["L"]):
        p = "model.layers.%d." % i
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope((h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd))
        k = rope((h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd))
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd)
        ctx = np.zeros((T, H, hd))
        for hh in range(H):
            kv = hh // (H // KV)
            sc = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            ctx[:, hh] = pr @ v[:, kv]
        x = x + ctx.reshape(T, D) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g = h @ W[p + "mlp.gate_proj.weight"].T
        u = h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"])
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return (x @ head.T).astype(np.float32)


def llama_config(V, tie):
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": LL["D"], "intermediate_size": LL["F"],
            "num_hidden_layers": LL["L"], "num_attention_heads": LL["H"],
            "num_key_value_heads": LL["KV"], "hidden_act": "silu",
            "max_position_embeddings": 64, "rms_norm_eps": LL["eps"],
            "rope_theta": LL["theta"], "rope_scaling": None, "vocab_size": V,
            "tie_word_embeddings": tie, "bos_token_id": 256, "eos_token_id": 257,
            "torch_dtype": "float32"}


def fx_llama():
    W, V = llama_weights()
    tj, _ = tokenizer_json(True, False)
    # f32 directory, untied head
    W_untied = dict(W)
    W_untied["lm_head.weight"] = (rng.standard_normal((V, LL["D"])) * 0.3).astype(np.float32)
    d = os.path.join(OUT, "llama-f32")
    os.makedirs(d, exist_ok=True)
    st_write(os.path.join(d, "model.safetensors"), sorted(W_untied.items()), {"format": "pt"})
    write_json(os.path.join(d, "config.json"), llama_config(V, False))
    write_json(os.path.join(d, "tokenizer.json"), tj)
    refs = [("ids", np.array(LL_IDS, np.int32)), ("llama-f32", llama_forward(W_untied, LL_IDS))]

    # the same model quantized (pack-quantized int4 sym group=32 on every layer but the
    # head), tied embeddings; the reference runs on the dequantized weights
    d = os.path.join(OUT, "llama-int4")
    os.makedirs(d, exist_ok=True)
    fx = Fixture("llama-int4", "pack-quantized")
    Wq = {}
    for k, v in W.items():
        if ".layers." in k and k.endswith("_proj.weight"):
            m = k[:-len(".weight")]
            N, K = v.shape
            s = (np.abs(v).reshape(N, K // 32, 32).max(-1) / 7).astype(np.float16)
            sf = s.astype(np.float32)
            q = np.clip(np.round(v / np.repeat(sf, 32, 1)), -8, 7).astype(np.int64)
            fx.tensors += [(m + ".weight_packed", ct_pack(q, 4)),
                           (m + ".weight_shape", np.array([N, K], np.int64)),
                           (m + ".weight_scale", s)]
            Wq[k] = np.repeat(sf, 32, 1) * q.astype(np.float32)
            fx.module(m, Wq[k], "int4 sym group=32")
        else:
            b = bf16_bits(v)
            Wq[k] = bf16_value(b)
            fx.plain(k, Wq[k], (b, "BF16"))
    cfg = llama_config(V, True)
    cfg["quantization_config"] = ct_config("pack-quantized", {"group_0": {
        "targets": ["Linear"], "weights": ct_args(4, True, "group", 32),
        "input_activations": None}}, ["lm_head"])["quantization_config"]
    write_json(os.path.join(d, "tokenizer.json"), tj)
    fx.finish(cfg)
    refs.append(("llama-int4", llama_forward(Wq, LL_IDS)))
    st_write(os.path.join(OUT, "llama.ref.safetensors"), refs)


# ------------------------------------------------------------------ tiny BERT, quantized


def fx_bert():
    """A 1-layer BERT in pack-quantized int4 asym: the loader must give each linear the
    dequantized weight and keep the stored form."""
    D, F, V, P = 32, 64, 40, 16
    fx = Fixture("bert-int4", "pack-quantized")
    d = fx.dir

    def plain(n, shape, base=0.0):
        v = (base + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        fx.plain(n, v, (v,))

    plain("embeddings.word_embeddings.weight", (V, D))
    plain("embeddings.position_embeddings.weight", (P, D))
    plain("embeddings.token_type_embeddings.weight", (2, D))
    plain("embeddings.LayerNorm.weight", (D,), 1.0)
    plain("embeddings.LayerNorm.bias", (D,))
    L = "encoder.layer.0."
    for n, (N, K) in {"attention.self.query": (D, D), "attention.self.key": (D, D),
                      "attention.self.value": (D, D), "attention.output.dense": (D, D),
                      "intermediate.dense": (F, D), "output.dense": (D, F)}.items():
        ct_int_module(fx, L + n, N, K, 4, False, "group", 16, bias=True)
    for n in ["attention.output.LayerNorm", "output.LayerNorm"]:
        plain(L + n + ".weight", (D,), 1.0)
        plain(L + n + ".bias", (D,))
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] +
                          ["w%d" % i for i in range(V - 5)]) + "\n")
    cfg = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": D,
           "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": F,
           "max_position_embeddings": P, "vocab_size": V, "hidden_act": "gelu",
           "layer_norm_eps": 1e-12, "type_vocab_size": 2}
    cfg["quantization_config"] = ct_config("pack-quantized", {"group_0": {
        "targets": ["Linear"], "weights": ct_args(4, False, "group", 16)}}, [])["quantization_config"]
    fx.finish(cfg)


def main():
    os.makedirs(OUT, exist_ok=True)
    fx_ct_pack_int4()
    fx_ct_pack_asym()
    fx_ct_int8("ct-int8", "int-quantized")
    fx_ct_int8("ct-naive", "naive-quantized")
    fx_ct_fp8()
    fx_ct_sharded()
    fx_gptq("gptq-v1-sym", 4, 32, True, False, False, "config")
    fx_gptq("gptq-v1-asym-act", 4, 32, False, True, False, "file")
    fx_gptq("gptq-v2-asym", 4, 16, False, False, True, "config")
    fx_gptq("gptq-8bit-channel", 8, -1, True, False, False, "config")
    fx_awq()
    fx_bad()
    fx_tokenizers()
    fx_llama()
    fx_bert()


main()
