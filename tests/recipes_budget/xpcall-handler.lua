-- a message handler re-entered once the budget is hit (Lua runs it with hooks off)
-- expect: 3 instructions
xpcall(function() while true do end end, function(m) while true do end end)
