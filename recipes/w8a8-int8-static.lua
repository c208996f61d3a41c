-- w8a8-int8-static: int8 weights per channel x int8 activations with ONE static
-- scale per tensor, chosen ahead of time. No scale is given here, so it is
-- calibrated (`kiln run` calibrates before interpreting); percentile 99.99
-- clips rare outliers. To pin a known scale write scale = 0.0213.
return recipe "w8a8-int8-static" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "tensor", dynamic = false, calib = "percentile", percentile = 99.99 },
  },
}
