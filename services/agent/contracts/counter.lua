-- A shared counter: adds the argument (a decimal number) to the value under "counter".
local by = tonumber(...) or 1
local current = coroutine.yield("counter")
local n = (tonumber(current) or 0) + by
return { counter = tostring(n) }
