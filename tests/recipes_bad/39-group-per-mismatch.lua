-- group with another granularity is contradictory
return recipe "bad" {
  rule "*" { weights = int4 { per = "channel", group = 64 } },
}
