-- catching the instruction limit with pcall does not keep a loop alive
local function spin() while true do end end
while true do pcall(spin) end
