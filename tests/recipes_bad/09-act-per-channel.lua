-- per-channel activation scales are not a thing here
return recipe "bad" {
  rule "*" { weights = int4,
    activations = int8 { per = "channel" } },
}
