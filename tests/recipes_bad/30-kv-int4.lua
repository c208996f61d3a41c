-- int4 KV cache is not supported
return recipe "bad" {
  rule "*" { weights = int8 },

  kv_cache = int4,
}
