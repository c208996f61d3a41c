-- dynamic scales are absmax/127, symmetric
return recipe "bad" {
  rule "*" { weights = int8,
    activations = int8 { symmetric = false } },
}
