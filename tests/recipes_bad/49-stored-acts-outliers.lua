-- outliers split the recipe's own int8 activations; with activations = stored the
-- model file's scheme decides, layer by layer
return recipe "bad" {
  rule "*" {
    weights = stored,
    activations = stored,
    outliers = 6.0,
  },
}
