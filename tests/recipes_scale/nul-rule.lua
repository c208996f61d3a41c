return recipe "nul" {
  rule "model.\0.mlp" { weights = int8 },
}
