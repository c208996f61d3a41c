-- math.max over 300,000 arguments in a loop
-- expect: 5 instructions
local t = {}
for i = 1, 300000 do t[i] = i end
local function f(...) for i = 1, 1e9 do local m = math.max(...) end end
f(table.unpack(t))
