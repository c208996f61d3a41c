-- fp8-e4m3-dynamic: FP8 E4M3 weights (one scale per output channel) x FP8 E4M3
-- activations scaled per token at run time. Native on Hopper/Ada (sm_89, sm_90);
-- on sm_80 the layout pass falls back to weight-only fp8 with f16 activations.
return recipe "fp8-e4m3-dynamic" {
  ignore = { "lm_head" },
  rule "*" {
    weights = fp8_e4m3 { per = "channel" },
    activations = fp8_e4m3 { per = "token" },   -- dynamic is the default
  },
}
