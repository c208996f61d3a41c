-- table.concat of a million empty strings in a loop
-- expect: 5 instructions
local t = {}
for i = 1, 1e6 do t[i] = "" end
for k = 1, 1e6 do local s = table.concat(t) end
