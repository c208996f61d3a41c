return recipe "bad" {
  rule "*" { weights = int8, activations = stored },
}
