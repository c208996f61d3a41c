-- w8a8-int8-smoothquant: w8a8-int8-dynamic with SmoothQuant: per-channel factors
-- s = max|x|^alpha / max|w|^(1-alpha) move the activation outliers into the weights
-- (folded into the preceding norm / layer), so per-token int8 activations lose
-- less; GPTQ then rounds the smoothed weights.
return recipe "w8a8-int8-smoothquant" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
    method = { "smoothquant", "gptq", alpha = 0.5 },
  },
}
