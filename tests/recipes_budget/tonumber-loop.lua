-- tonumber scans a 16 MiB string per call
-- expect: 4 instructions
local s = string.rep(" ", 16 << 20)
for i = 1, 1e8 do local x = tonumber(s) end
