-- not a method at all
return recipe "bad" {
  rule "*" { weights = int8 { method = "foo" } },
}
