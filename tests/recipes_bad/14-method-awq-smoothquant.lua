-- awq and smoothquant both migrate one per-channel scale: only one may apply
return recipe "bad" {
  rule "*" {
    weights = int8,
    activations = int8,
    method = { "awq", "smoothquant" },
  },
}
