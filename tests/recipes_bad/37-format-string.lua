-- formats are values, not strings
return recipe "bad" {
  rule "*" {
    weights = "int8",
  },
}
