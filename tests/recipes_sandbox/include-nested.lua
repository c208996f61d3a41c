-- include-nested.lua: includes a file that itself includes the shared rules
local rules = include "nested-rules.lua"
return recipe "include-nested" (rules)
