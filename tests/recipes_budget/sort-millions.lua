-- table.sort of millions in C
-- expect: 5 instructions
local t = {}
for i = 1, 2e6 do t[i] = (i * 7919) % 1000003 end
for k = 1, 1000 do table.sort(t) end
