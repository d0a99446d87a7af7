-- Trusted prelude, run once per VM with the real globals, before any contract. It builds the
-- sandbox that contracts see and returns:
--   1. the metatable of every contract environment ({ __index = sandbox, __metatable = false }),
--   2. the list of read-only library proxies, which the runner scrubs after each call (rawset
--      bypasses __newindex, so a contract can still store fields in a proxy).
--
-- Nothing here is reachable from a contract except through the functions it exposes.

local builtins = ...

local error, type, select, rawget, rawequal = error, type, select, rawget, rawequal
local setmetatable, tointeger, ult, maxinteger = setmetatable, math.tointeger, math.ult, math.maxinteger
local format = string.format

-- Helpers for the table functions below, mirroring the messages of the C library.

local function check_table(t, arg, fname)
  if type(t) ~= "table" then
    error(format("bad argument #%d to '%s' (table expected, got %s)", arg, fname, type(t)), 3)
  end
end

local function check_integer(v, arg, fname)
  local n = tointeger(v)
  if n == nil then
    local problem = type(v) == "number" and "number has no integer representation"
      or "number expected, got " .. type(v)
    error(format("bad argument #%d to '%s' (%s)", arg, fname, problem), 3)
  end
  return n
end

local function length(t, fname)
  local n = #t
  if tointeger(n) == nil then
    error(format("object length is not an integer (in '%s')", fname), 3)
  end
  return n
end

-- table.insert, table.remove and table.move loop in C over a length the contract controls
-- (through __len or the arguments) without ever reaching the instruction hook, so a single
-- call could spin for 2^62 iterations. These Lua versions behave the same but run in Lua, where
-- every iteration is metered.

local function insert(t, ...)
  check_table(t, 1, "insert")
  local e = length(t, "insert") + 1 -- first empty slot
  local nargs = select("#", ...)
  if nargs == 1 then
    t[e] = ...
    return
  elseif nargs ~= 2 then
    error("wrong number of arguments to 'insert'", 2)
  end
  local pos, value = ...
  pos = check_integer(pos, 2, "insert")
  if not ult(pos - 1, e) then -- pos in [1, e]
    error("bad argument #2 to 'insert' (position out of bounds)", 2)
  end
  for i = e, pos + 1, -1 do
    t[i] = t[i - 1]
  end
  t[pos] = value
end

local function remove(t, pos)
  check_table(t, 1, "remove")
  local size = length(t, "remove")
  if pos == nil then
    pos = size
  else
    pos = check_integer(pos, 2, "remove")
    if pos ~= size and ult(size, pos - 1) then -- pos in [1, size + 1]
      error("bad argument #2 to 'remove' (position out of bounds)", 2)
    end
  end
  local value = t[pos]
  while pos < size do
    t[pos] = t[pos + 1]
    pos = pos + 1
  end
  t[pos] = nil
  return value
end

local function move(a1, f, e, t, a2)
  check_table(a1, 1, "move")
  f = check_integer(f, 2, "move")
  e = check_integer(e, 3, "move")
  t = check_integer(t, 4, "move")
  if a2 == nil then
    a2 = a1
  else
    check_table(a2, 5, "move")
  end
  if e >= f then
    if not (f > 0 or e < maxinteger + f) then
      error("bad argument #3 to 'move' (too many elements to move)", 2)
    end
    local n = e - f + 1
    if t > maxinteger - n + 1 then
      error("bad argument #4 to 'move' (destination wrap around)", 2)
    end
    if t > e or t <= f or not rawequal(a1, a2) then
      for i = 0, n - 1 do
        a2[t + i] = a1[f + i]
      end
    else
      for i = n - 1, 0, -1 do
        a2[t + i] = a1[f + i]
      end
    end
  end
  return a2
end

-- string.rep("", 2^62) loops 2^62 times in C without allocating anything, so neither the
-- instruction hook nor the memory limit would ever stop it.
local raw_rep = string.rep
local function rep(s, n, sep)
  if s == "" and (sep == nil or sep == "") then
    return raw_rep(s, math.min(n, 1)) -- still checks that n is a number
  end
  return raw_rep(s, n, sep)
end

-- A finalizer (__gc) would run whenever the collector gets to it: in a later call, or outside
-- any call where no budget applies. Weak tables (__mode) make results depend on when the
-- collector ran, and contracts must be deterministic because they re-run on retry.
local raw_setmetatable = setmetatable
local function guarded_setmetatable(t, mt)
  if type(mt) == "table" and (rawget(mt, "__gc") ~= nil or rawget(mt, "__mode") ~= nil) then
    error("setmetatable: __gc and __mode are not allowed in contracts", 2)
  end
  return raw_setmetatable(t, mt)
end

-- Patch the real library tables: the string metatable's __index is the real `string` table,
-- so `("").rep` must see the safe version too.
string.dump = nil
string.rep = rep

-- Lua patterns backtrack inside one C call, where the instruction hook never runs: a crafted
-- pattern takes exponential time. Contracts get plain-text search only, with a short needle so
-- that even the naive search stays linear in the haystack.
local MAX_NEEDLE = 64
local raw_find = string.find
string.find = function(s, needle, init)
  if type(needle) == "string" and #needle > MAX_NEEDLE then
    error("string.find: the searched text is limited to " .. MAX_NEEDLE .. " bytes", 2)
  end
  return raw_find(s, needle, init, true)
end
string.match = nil
string.gmatch = nil
string.gsub = nil
math.random = nil
math.randomseed = nil
table.insert = insert
table.remove = remove
table.move = move

-- getmetatable("") must not hand out the real `string` table (a contract could then patch it
-- for every later call on this VM).
getmetatable("").__metatable = false

local function deny_write()
  error("attempt to modify a read-only library table", 2)
end

local function read_only(lib)
  return raw_setmetatable({}, { __index = lib, __newindex = deny_write, __metatable = false })
end

local sandbox = {
  assert = assert,
  error = error,
  ipairs = ipairs,
  next = next,
  pairs = pairs,
  select = select,
  tonumber = tonumber,
  tostring = tostring,
  type = type,
  rawequal = rawequal,
  rawget = rawget,
  rawlen = rawlen,
  rawset = rawset,
  setmetatable = guarded_setmetatable,
  getmetatable = getmetatable,
  string = read_only(string),
  table = read_only(table),
  math = read_only(math),
  utf8 = read_only(utf8),
  -- Only yield: with resume/wrap/create a contract could run code that catches errors.
  coroutine = read_only({ yield = coroutine.yield }),
  sha256 = builtins.sha256,
  verify_schnorr = builtins.verify_schnorr,
}

local proxies = { sandbox.string, sandbox.table, sandbox.math, sandbox.utf8, sandbox.coroutine }
return { __index = sandbox, __metatable = false }, proxies
