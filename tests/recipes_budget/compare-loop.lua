-- comparing two 16 MiB strings per instruction
-- expect: 5 time
local a = string.rep("a", 16 << 20)
local b = a:sub(1, -2) .. "b"
for i = 1, 1e8 do local x = a < b end
