-- a memory budget error caught by pcall, and the recipe returning before the next hook
-- expect: 4 memory
local r = recipe "x" { rule "*" { weights = int8 } }
local ok = pcall(string.rep, "x", 40 << 20) return r
