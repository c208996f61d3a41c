-- w4a8-head: recipes/w4a8.lua with the output head quantized too, for whole-model speed
-- (kiln bench --model, docs/bench.md): lm_head gets int8 weights per output channel x int8
-- activations per token (as llama.cpp's Q8_0 head x Q8 activations), instead of the f32
-- head w4a8.lua keeps (49152 x 576 f32 = 113 MB read per generated token on SmolLM2).
-- Its perplexity is measured in docs/bench.md; w4a8.lua's meaning is unchanged.
return recipe "w4a8-head" {
  rule "lm_head" {
    weights = int8 { per = "channel" },
    activations = int8 { per = "token", dynamic = true },
  },
  rule "*" {
    weights = int4 { group = 128 },
    activations = int8 { per = "token", dynamic = true },
  },
}
