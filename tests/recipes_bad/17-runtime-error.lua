-- errors raised by the recipe itself keep their line
local x = 1
if x == 1 then error("custom failure") end
return recipe "bad" { rule "*" { weights = int8 } }
