-- per value misspelt
return recipe "bad" {
  rule "*" {
    weights = int8 { per = "chanel" },
  },
}
