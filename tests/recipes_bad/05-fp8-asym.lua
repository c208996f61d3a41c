-- fp8 has no zero point
return recipe "bad" {
  rule "*" {
    activations = f16,
    weights = fp8_e4m3 { symmetric = false },
  },
}
