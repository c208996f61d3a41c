-- keep layers in float with ignore, not with weights = f16
return recipe "bad" {
  rule "*" { weights = f16 },
}
