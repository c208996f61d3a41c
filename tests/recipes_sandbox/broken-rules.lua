-- broken-rules.lua: int3 is no format
return {
  rule "*.mlp.*" { weights = int4 },
  rule "*" { weights = int3 },
}
