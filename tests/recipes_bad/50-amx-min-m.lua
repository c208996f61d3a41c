-- amx_min_m counts rows: an integer of at least 1
return recipe "bad" {
  rule "*" { weights = int8, activations = int8 },
  amx_min_m = 0.5,
}
