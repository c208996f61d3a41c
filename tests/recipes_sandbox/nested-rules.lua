-- nested-rules.lua: passes the shared rules on, plus one of its own
local rules = include "shared-rules.lua"
rules[#rules + 1] = rule "lm_head" { weights = int8 }
return rules
