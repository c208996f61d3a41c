-- string.rep of 16 MiB per call
-- expect: 3 instructions
for i = 1, 1e8 do local t = string.rep("ab", 8 << 20) end
