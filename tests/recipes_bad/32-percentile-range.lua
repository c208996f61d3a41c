-- percentiles are in (0, 100]
return recipe "bad" {
  rule "*" { weights = int8,
    activations = int8 { dynamic = false, calib = "percentile", percentile = 150 } },
}
