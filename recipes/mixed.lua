-- mixed: different formats for different layers of one model, written for the
-- Hugging Face Llama layer names (SmolLM2 in `kiln eval`, docs/models.md):
--   model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj,
--   lm_head.
-- Rules are tried in order and the first match wins; the ignore list is checked
-- before any rule. Every rule here uses per-channel (or per-token) scales, so it
-- fits any K; a `group = G` would have to divide the layer's K (SmolLM2: 576 and
-- 1536, MiniLM: 384 and 1536 -- 64 or 32 divide all of them).
return recipe "mixed" {
  target = "cpu",
  -- Kept in f32: the output head (the most sensitive layer: its errors land
  -- directly on the logits) and MoE router gates, if the model has any.
  ignore = { "lm_head", "*.gate" },

  -- Llama's MLP computes down_proj(silu(gate_proj(x)) * up_proj(x)): the SiLU is
  -- the model's own activation on gate_proj's output, so the kernel may apply it
  -- right after the GEMM (`kiln eval` then skips the model's own SiLU). w8a8 with
  -- per-token dynamic activation scales; bias = true adds the layer's bias when
  -- it has one (SmolLM2 has none: zeros); f16 output halves what is written.
  -- Fusing silu into up_proj or down_proj would change the model: `kiln eval`
  -- rejects it.
  rule "*.mlp.gate_proj" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
    epilogue = { bias = true, act = "silu", out = "f16" },
  },
  -- Attention query projections (a Lua pattern, anchored at the end so that
  -- e.g. "q_proj_lora" does not match): fp8 E4M3 weights and activations. On
  -- sm_80 (no FP8 tensor cores) it runs weight-only with f16 activations.
  rule "%.self_attn%.q_proj$" {
    match = "lua",
    weights = fp8_e4m3 { per = "channel" },
    activations = fp8_e4m3 { per = "token" },
  },
  -- The other attention projections (k, v, o): int8 weights whose scale layout
  -- the target picks (per = "auto", docs/targets.md: for int8 weights with bf16
  -- activations one scale per output channel on every target, since groups gain
  -- nothing measurable there; int4 would get groups of 32 to 128 by target),
  -- bf16 activations.
  rule "*.self_attn.*" {
    weights = int8 { per = "auto" },
    activations = bf16,
  },
  -- Everything else (up_proj, down_proj; on BERT every layer, since its names
  -- have no self_attn/gate_proj): int8 weights per output channel, f16
  -- activations (w8a16, near-lossless). int4 is left out on purpose: SmolLM2's
  -- weights are already Q4_1, and a second 4-bit rounding costs ~50 % perplexity
  -- (docs/models.md).
  rule "*" {
    weights = int8 { per = "channel" },
    activations = f16,
  },

  -- The KV cache in fp8 E4M3 with one scale per KV head (static: calibrated by
  -- `kiln eval` on its calibration text; 1 byte per value instead of 4).
  kv_cache = fp8_e4m3 { per = "head" },
}
