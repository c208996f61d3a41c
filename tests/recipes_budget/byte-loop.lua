-- string.byte returning a million values per call
-- expect: 4 instructions
local s = string.rep("a", 999000)
for i = 1, 1e6 do local n = select("#", s:byte(1, -1)) end
