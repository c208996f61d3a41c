-- include-syntax.lua: the included file does not parse

return recipe "include-syntax" (include "syntax-error.lua")
