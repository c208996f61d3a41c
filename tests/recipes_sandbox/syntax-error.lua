-- syntax-error.lua: a missing closing brace
return { rule "*" { weights = int8 }
