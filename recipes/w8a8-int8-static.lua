-- w8a8-int8-static: int8 weights per channel x int8 activations with ONE static
-- scale per tensor, chosen ahead of time. No scale is given here, so it is
-- calibrated on calibration activations (`kiln run` uses a separate random batch,
-- `kiln eval` the calibration text; `kiln quantize` stores that same scale as each
-- layer's input_scale, docs/checkpoints.md) with minmax: LLM activations have rare, large
-- outliers that carry much of the signal, and clipping them (calib = "percentile")
-- measured worse on both MiniLM and SmolLM2 (docs/models.md). Static per-tensor int8
-- is the cheapest activation scheme and the least accurate; prefer per-token dynamic
-- scales (w8a8-int8-dynamic.lua) unless the kernel must not compute scales.
-- To pin a known scale write scale = 0.0213.
return recipe "w8a8-int8-static" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "tensor", dynamic = false, calib = "minmax" },
  },
}
