return recipe "bad" {
  rule "*" { weights = int8, activations = int8, method = { "smoothquant", alpha = 1.5 } },
}
