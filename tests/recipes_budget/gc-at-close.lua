-- a __gc finalizer runs while the state closes, after the hook is gone (also after an error)
-- expect: 3 __gc finalizers are not available in a recipe: Lua runs them
setmetatable({}, {__gc = function() while true do end end})
error("the recipe fails; the state is closed")
