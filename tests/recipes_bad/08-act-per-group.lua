-- activation scales are per token or per tensor


return recipe "bad" {
  rule "*" { weights = int8, activations = int8 { per = "group" } },
}
