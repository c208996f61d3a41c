local t = {}
for i = 1, 45000 do t[i] = rule ("model.layers." .. i .. ".*") { weights = int8 } end
t[#t + 1] = rule "model.layers.7.*" { weights = int4 }
return recipe "dup" (t)
