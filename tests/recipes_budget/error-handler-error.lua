-- a message handler that errors and loops
-- expect: 3 instructions
local function h(m) local t = {} for i = 1, 1e9 do t[i % 10] = i end end
for i = 1, 1e9 do xpcall(error, h) end
