-- damp is a gptq option
return recipe "bad" {
  rule "*" {
    weights = int4 { group = 32 },
    method = { "awq", damp = 0.1 },
  },
}
