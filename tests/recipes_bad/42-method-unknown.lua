return recipe "bad" {
  rule "*" { weights = int4 { group = 32 }, method = "gtpq" },
}
