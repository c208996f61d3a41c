-- finalizers run during collection with hooks off
-- expect: 3 __gc finalizers are not available in a recipe: Lua runs them
setmetatable({}, {__gc = function() while true do end end})
local t = {}
for i = 1, 1e7 do t[i % 1000] = {} end
