-- w8a16: int8 weights with one scale per output channel, 16-bit activations.
-- Weight-only INT8: halves weight memory vs f16 with almost no accuracy loss.
return recipe "w8a16" {
  rule "*" {
    weights = int8 { per = "channel" },
    activations = f16,
  },
}
