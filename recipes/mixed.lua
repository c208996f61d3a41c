-- mixed: different formats for different layers of a Llama-style model.
-- Rules are tried in order and the first match wins; the ignore list is
-- checked before any rule.
return recipe "mixed" {
  target = "cpu",
  ignore = { "lm_head", "*.gate" },          -- f32: output head and MoE router gates

  -- MLP up/gate projections: w8a8 with the SiLU and bias fused after the GEMM,
  -- f16 output.
  rule "*.mlp.up_proj" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
    epilogue = { bias = true, act = "silu", out = "f16" },
  },
  -- Attention query projections (a Lua pattern, anchored at the end): fp8.
  rule "%.attn%.q_proj$" {
    match = "lua",
    weights = fp8_e4m3 { per = "channel" },
    activations = fp8_e4m3 { per = "token" },
  },
  -- Other attention projections: int4 weights, scale layout chosen by the
  -- target (per = "auto" lets the layout pass pick group or channel).
  rule "*.attn.*" {
    weights = int4 { per = "auto" },
    activations = bf16,
  },
  -- Everything else: 4-bit asymmetric, groups of 128, f16 activations.
  rule "*" {
    weights = int4 { group = 128, symmetric = false },
  },

  kv_cache = fp8_e4m3 { per = "head" },
}
