-- f32: the unquantized baseline. Every layer is ignored, so every linear layer runs
-- in f32 (kiln's "f32" kernel, or the model's own f32 GEMM). `kiln eval` compares
-- recipes against this. The rule below never matches: a recipe needs one.
return recipe "f32" {
  ignore = { "*" },
  rule "*" {
    weights = int8 { per = "channel" },
  },
}
