-- 16 MiB upper() in a loop
-- expect: 4 instructions
local s = string.rep("a", 16 << 20)
for i = 1, 1e6 do local u = s:upper() end
