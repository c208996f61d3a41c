-- misspelt recipe-level key
return recipe "bad" {
  rule "*" { weights = int8 },
  tagret = "avx2",
}
