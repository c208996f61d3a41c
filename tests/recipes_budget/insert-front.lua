-- table.insert(t, 1, x) in a loop: quadratic
-- expect: 4 instructions
local t = {}
for i = 1, 2e6 do table.insert(t, 1, i) end
