-- a recipe needs at least one rule
return recipe "empty" {
  ignore = { "lm_head" },
}
