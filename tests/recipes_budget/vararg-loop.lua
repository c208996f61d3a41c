-- 300,000 varargs passed on at every call
-- expect: 5 instructions
local t = {}
for i = 1, 300000 do t[i] = i end
local function f(...) for i = 1, 1e9 do local n = select("#", ...) end end
f(table.unpack(t))
