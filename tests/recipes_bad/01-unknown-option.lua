-- a misspelt option name
return recipe "bad" {
  rule "*" { weights = int4 { grp = 128 } },
}
