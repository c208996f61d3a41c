-- w4a8-gptq: int4 weights (symmetric, groups of 128) rounded by GPTQ, int8
-- activations scaled per token at run time; SmoothQuant first eases the int8
-- activations.
return recipe "w4a8-gptq" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 128 },
    activations = int8 { per = "token", dynamic = true },
    method = { "smoothquant", "gptq", alpha = 0.5 },
  },
}
