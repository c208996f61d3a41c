-- table.remove(t, 1) in a loop: quadratic
-- expect: 5 instructions
local t = {}
for i = 1, 2e6 do t[i] = i end
for i = 1, 2e6 do table.remove(t, 1) end
