-- plain find of a 2 MiB needle over 4 MiB: O(n*m) in C, charged as one call
-- expect: 5 instructions
local h = string.rep("a", 4 << 20)
local n = string.rep("a", 2 << 20) .. "b"
for i = 1, 100 do local x = h:find(n, 1, true) end
