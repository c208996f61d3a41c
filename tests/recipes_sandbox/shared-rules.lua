-- shared-rules.lua: a rule list other recipes include (include "shared-rules.lua")
return {
  rule "*.mlp.*" { weights = int4 { group = 32 } },
  rule "*.self_attn.*" { weights = int8, activations = int8 { dynamic = true } },
}
