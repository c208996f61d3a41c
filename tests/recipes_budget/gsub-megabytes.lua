-- gsub over megabytes in a loop
-- expect: 4 instructions
local s = string.rep("a", 4 << 20)
for i = 1, 1e6 do local r = s:gsub("a", "b") end
