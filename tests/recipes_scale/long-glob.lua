return recipe "long" {
  rule (string.rep("a", 1001)) { weights = int8 },
}
