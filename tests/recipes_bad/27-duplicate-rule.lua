-- the second rule could never match
return recipe "bad" {
  rule "*.mlp.*" { weights = int8 },
  rule "*.mlp.*" { weights = int4 },
  rule "*" { weights = int4 },
}
