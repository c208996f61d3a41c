-- include-broken.lua: the included file has an error on its line 4
local rules = include "broken-rules.lua"
return recipe "include-broken" (rules)
