-- a __close handler that loops, run while the budget error unwinds
-- expect: 4 instructions
local x <close> = setmetatable({}, {__close = function() while true do end end})
while true do end
