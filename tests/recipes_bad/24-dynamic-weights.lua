-- weights are quantized ahead of time
return recipe "bad" {
  rule "*" {
    weights = int8 { dynamic = true },
  },
}
