-- table.unpack of 1M values in a loop
-- expect: 5 instructions
local t = {}
for i = 1, 999000 do t[i] = i end
for k = 1, 1e6 do local n = select("#", table.unpack(t)) end
