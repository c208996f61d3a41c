local t = {}
for i = 1, 100000 do t[i] = "model.layers." .. i end
t[#t + 1] = "model.layers.99999"
return recipe "dup" {
  ignore = t,
  rule "*" { weights = int8 },
}
