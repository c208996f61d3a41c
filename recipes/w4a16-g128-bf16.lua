-- w4a16-g128-bf16: w4a16-g128-asym's weights (4-bit, asymmetric, one scale and zero
-- point per 128 input channels) with bf16 activations instead of f16: 8 significant
-- bits instead of 11, but f32's exponent range (no overflow past 65504, no f16
-- subnormals). On AVX-512 BF16 the kernel is vdpbf16ps; on AMX hosts prefill runs on
-- tdpbf16ps tiles (docs/targets.md, docs/numerics.md has what bf16 changes).
-- K (in_features) of every quantized layer must be a multiple of 128.
return recipe "w4a16-g128-bf16" {
  ignore = { "lm_head" },   -- the output head is sensitive: keep it in f32
  rule "*" {
    weights = int4 { group = 128, symmetric = false, method = "rtn" },
    activations = bf16,
  },
}
