-- the .. operator copying 16 MiB per instruction
-- expect: 4 instructions
local s = string.rep("a", 16 << 20)
for i = 1, 1e7 do local t = s .. "x" end
