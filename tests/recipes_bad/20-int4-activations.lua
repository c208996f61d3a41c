-- int4 is a weight format only
return recipe "bad" {
  rule "*" { weights = int4,
             activations = int4 },
}
