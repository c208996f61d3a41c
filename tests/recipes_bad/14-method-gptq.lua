-- gptq is recognised but not implemented yet
return recipe "bad" {
  rule "*" {
    weights = int4 { group = 128, method = "gptq" },
  },
}
