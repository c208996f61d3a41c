-- w4a16-g32-sym: 4-bit symmetric weights with small groups (one scale per 32
-- input channels, no zero point); f16 activations. Smaller groups track local
-- weight ranges better than g128 at a little more scale storage.
return recipe "w4a16-g32-sym" {
  ignore = { "lm_head" },
  rule "*" {
    weights = int4 { group = 32 },   -- symmetric is the default
    activations = f16,
  },
}
