-- a finalizer smuggled onto the recipe language's own metatables
-- expect: 3 attempt to index a string value
getmetatable(int8).__gc = function() while true do end end
for i = 1, 1e6 do local f = int8 {group = 32} end
