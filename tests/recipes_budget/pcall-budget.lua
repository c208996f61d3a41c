-- pcall catching the budget error and going on
-- expect: 3 instructions
for i = 1, 1e9 do pcall(function() while true do end end) end
