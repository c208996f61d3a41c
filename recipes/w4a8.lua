-- w4a8: int4 weights (symmetric, groups of 128) x int8 activations scaled per
-- token at run time. Integer GEMM with 4-bit weight traffic: the compute of
-- w8a8 at close to the memory footprint of w4a16.
return recipe "w4a8" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 128 },
    activations = int8 { per = "token", dynamic = true },
  },
}
