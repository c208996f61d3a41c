-- int activations need int weights
return recipe "bad" {
  rule "*" {
    weights = fp8_e4m3 { per = "channel" },
    activations = int8 { per = "token" },
  },
}
