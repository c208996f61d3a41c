-- stored-f32acts: a checkpoint's stored weights (codes, scales, zero points) with f32
-- activations, for the same reason as w8-f32acts.lua (python/tests/test_models.py).
return recipe "stored-f32acts" {
  ignore = { "lm_head" },
  rule "*" { weights = stored, activations = f32 },
}
