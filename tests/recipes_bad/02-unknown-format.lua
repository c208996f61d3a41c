-- int3 is not a format
return recipe "bad" {
  rule "*" {
    weights = int3 { group = 128 },
  },
}
