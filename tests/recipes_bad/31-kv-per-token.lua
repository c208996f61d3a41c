-- kv scales are per tensor or per head
return recipe "bad" {
  rule "*" { weights = int8 },
  kv_cache = int8 { per = "token" },
}
