-- fp8-e4m3-static: FP8 E4M3 with one scale per tensor for weights and a static
-- per-tensor activation scale (calibrated, since none is given). The simplest
-- FP8 scheme, as shipped in many FP8 checkpoints.
return recipe "fp8-e4m3-static" {
  ignore = { "lm_head" },
  rule "*" {
    weights = fp8_e4m3 { per = "tensor" },
    activations = fp8_e4m3 { per = "tensor", dynamic = false },
  },
}
