-- string.format copies 16 MiB per call
-- expect: 4 instructions
local s = string.rep("a", 16 << 20)
for i = 1, 1e8 do local t = string.format("%s", s) end
