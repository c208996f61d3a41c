-- w8a8-int8-dynamic-head: recipes/w8a8-int8-dynamic.lua with the output head quantized
-- the same way (int8 weights per output channel x int8 activations per token), for
-- whole-model speed (kiln bench --model, docs/bench.md): the f32 head that
-- w8a8-int8-dynamic.lua keeps is 113 MB read per generated token on SmolLM2. Its
-- perplexity is measured in docs/bench.md; w8a8-int8-dynamic.lua's meaning is unchanged.
return recipe "w8a8-int8-dynamic-head" {
  rule "*" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
  },
}
