-- a hostile recipe must not eat the machine's memory
local t = {}
for i = 1, 100 do
  t[i] = string.rep("x", 16 * 1024 * 1024) .. i
end
