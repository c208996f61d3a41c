-- w4a16-g128-asym: 4-bit weights, asymmetric (scale + zero point), one scale per
-- 128 input channels; activations stay 16-bit (f16). The classic GPTQ/AWQ-style
-- weight-only format: ~4x smaller weights, good for memory-bound decoding.
-- K (in_features) of every quantized layer must be a multiple of 128.
return recipe "w4a16-g128-asym" {
  ignore = { "lm_head" },   -- the output head is sensitive: keep it in f32
  rule "*" {
    weights = int4 { group = 128, symmetric = false, method = "rtn" },
    activations = f16,
  },
}
