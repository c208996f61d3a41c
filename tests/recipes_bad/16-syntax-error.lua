-- a missing comma between rules
return recipe "bad" {
  rule "*.mlp.*" { weights = int8 }
  -- the next line is where Lua notices
  rule "*" { weights = int4 },
}
