-- a hostile (or buggy) recipe must not hang kiln
local i = 0
while true do i = i + 1 end
