-- string arithmetic converts a 16 MiB string per operation
-- expect: 4 instructions
local s = string.rep(" ", 16 << 20) .. "1"
for i = 1, 1e8 do local x = s + 1 end
