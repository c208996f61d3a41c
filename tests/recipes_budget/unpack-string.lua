-- string.unpack with a long format per call
-- expect: 5 instructions
local f = string.rep("B", 200000)
local s = string.rep("a", 200000)
for i = 1, 1e8 do local n = select("#", string.unpack(f, s)) end
