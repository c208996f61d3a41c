-- group sizes are positive
return recipe "bad" {
  rule "*" { weights = int4 { group = 0 } },
}
