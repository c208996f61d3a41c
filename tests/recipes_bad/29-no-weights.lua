-- every rule says how to quantize weights
return recipe "bad" {
  rule "*" { activations = f16 },
}
