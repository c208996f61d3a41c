-- cycle-b.lua
return include "cycle-a.lua"
