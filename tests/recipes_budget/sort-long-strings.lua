-- table.sort of long equal strings: each comparison compares a MiB
-- expect: 6 instructions
local s = string.rep("a", 1 << 20)
local t = {}
for i = 1, 20000 do t[i] = s end
table.sort(t)
