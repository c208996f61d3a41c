-- fp8 activations need fp8 weights; a bare format is reported on its key's line
return recipe "bad" {
  rule "*" { weights = int8,
             activations = fp8_e5m2 },
}
