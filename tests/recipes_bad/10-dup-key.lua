-- Lua would keep the last silently
return recipe "bad" {
  rule "*" { weights = int4 {
    group = 128,
    group = 64 } },
}
