-- cycle-a.lua
return include "cycle-b.lua"
