-- a static scale per token cannot exist: tokens differ at run time
return recipe "bad" {
  rule "*" { weights = int8,
    activations = int8 { per = "token", dynamic = false },
  },
}
