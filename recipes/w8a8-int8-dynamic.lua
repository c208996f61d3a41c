-- w8a8-int8-dynamic: int8 weights (per output channel) x int8 activations whose
-- scale is computed per token at run time (absmax / 127). Integer GEMM with
-- no calibration step: the usual first choice for INT8 compute.
return recipe "w8a8-int8-dynamic" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
  },
}
