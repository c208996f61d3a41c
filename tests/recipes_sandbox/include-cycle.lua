-- include-cycle.lua: cycle-a.lua includes cycle-b.lua, which includes cycle-a.lua
return include "cycle-a.lua"
