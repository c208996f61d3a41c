-- outliers split int8 activations: a weight-only rule has none to split
return recipe "bad" {
  rule "*" {
    weights = int4 { group = 128 },
    activations = f16,
    outliers = { threshold = 6.0 },
  },
}
