-- include-endless.lua: the included file never ends; the budget is shared
local rules = include "endless.lua"
return recipe "include-endless" (rules)
