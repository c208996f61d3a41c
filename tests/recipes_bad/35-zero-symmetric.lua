-- a zero point needs an asymmetric format
return recipe "bad" {
  rule "*" { weights = int8,
    activations = int8 { dynamic = false, scale = 0.02, zero = 3 } },
}
