-- `weight` instead of `weights`
return recipe "bad" {
  rule "*" {
    activations = f16,
    weight = int8,
  },
}
