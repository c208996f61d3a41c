-- catching a recipe error does not make the recipe valid
local ok = pcall(int4, { grp = 1 })
return recipe "bad" { rule "*" { weights = int4 } }
