-- __gc present (false) when setmetatable marks the object; the function comes later
-- expect: 4 __gc finalizers are not available in a recipe: Lua runs them
local mt = {__gc = false}
local t = setmetatable({}, mt)
mt.__gc = function() while true do end end
