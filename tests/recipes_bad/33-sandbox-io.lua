-- the sandbox has no io, os, package or debug
local f = io.open("/etc/passwd")
return recipe "bad" { rule "*" { weights = int8 } }
