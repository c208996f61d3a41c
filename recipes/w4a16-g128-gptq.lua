-- w4a16-g128-gptq: the w4a16-g128-asym format, rounded by GPTQ instead of to nearest:
-- each column's rounding error is compensated on the columns not yet quantized,
-- using the layer's input statistics (X^T X) from calibration text. Same kernels and
-- bytes as round-to-nearest; the layer outputs are closer to f32's. kiln eval and
-- kiln quantize calibrate on text; kiln run runs GPTQ on a synthetic calibration batch.
return recipe "w4a16-g128-gptq" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 128, symmetric = false },
    activations = f16,
    method = { "gptq", damp = 0.01, block = 128, act_order = "static" },
  },
}
