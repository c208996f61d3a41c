-- a rule without its table
return recipe "bad" {
  rule "*",
}
