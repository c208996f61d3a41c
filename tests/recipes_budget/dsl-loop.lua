-- the recipe language's constructors copy their tables in C: called in a loop
-- expect: 6 instructions
local ig = {}
for i = 1, 2000 do ig[i] = "model.layers." .. i .. ".mlp.down_proj" .. string.rep("x", 64) end
local rule_list = {rule "*" {weights = int8}}
for k = 1, 1e6 do local r = recipe "x" {ignore = ig, rule_list[1]} end
