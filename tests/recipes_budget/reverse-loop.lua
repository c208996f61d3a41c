-- reverse and lower of 8 MiB per call
-- expect: 4 instructions
local s = string.rep("a", 8 << 20)
for i = 1, 1e8 do local t = s:reverse():lower() end
