-- targets are a fixed list
return recipe "bad" {
  target = "avx9000",
  rule "*" { weights = int8 },
}
