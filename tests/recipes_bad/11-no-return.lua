-- forgot `return`
recipe "bad" {
  rule "*" { weights = int8 },
}
