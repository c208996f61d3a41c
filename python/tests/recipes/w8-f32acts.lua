-- w8-f32acts: int8 weights per channel, f32 activations. No activation is rounded, so
-- a model's quantized forward is as deterministic as its f32 one: kiln eval in C and
-- the same layers under PyTorch (python/tests) give the same metric to its printed digits.
return recipe "w8-f32acts" {
  rule "*" { weights = int8 { per = "channel" }, activations = f32 },
}
