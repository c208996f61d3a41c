-- w4a16-g128-awq-prescale: AWQ where a scale cannot be folded away. In a post-norm
-- model (BERT) a LayerNorm's output is also the residual stream, so no norm can
-- absorb AWQ's per-channel scale and w4a16-g128-awq skips those layers; here each
-- such layer divides its input by the scale at run time instead (one multiply per
-- input element). kiln runs it; a checkpoint cannot express it (kiln quantize
-- refuses). On all-MiniLM-L6-v2: cosine 0.9745 vs 0.9528 without the pre-scale.
return recipe "w4a16-g128-awq-prescale" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 128, symmetric = false },
    activations = f16,
    method = { "awq", grid = 20, clip = true, prescale = true },
  },
}
