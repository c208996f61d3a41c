-- w4a16-g128-awq: the w4a16-g128-asym format with AWQ: a per-input-channel scale,
-- searched on calibration text, protects the weights that meet large activations;
-- it is folded into the norm or layer that produces the input, so the model's f32
-- function is unchanged, then each group's clipping range is searched too.
return recipe "w4a16-g128-awq" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 128, symmetric = false },
    activations = f16,
    method = { "awq", grid = 20, clip = true },
  },
}
