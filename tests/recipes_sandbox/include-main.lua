-- include-main.lua: reuses the shared rule list and adds a catch-all rule
local rules = { target = "cpu" }
for _, r in ipairs(include "shared-rules.lua") do rules[#rules + 1] = r end
rules[#rules + 1] = rule "*" { weights = int8 }
return recipe "include-main" (rules)
