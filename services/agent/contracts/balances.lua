-- balances: read-only query of account records (run it with read_only = true).
--
-- param  = pubkey(32) repeated 1..256 times
-- result = { ["account_" .. pubkey] = record } where record is string.pack("<I8I8", balance,
--          sequence), or "" for an account that does not exist yet.

local param = ...

local PUBKEY_LEN = 32
local MAX_ACCOUNTS = 256
local MAX_KEYS_PER_YIELD = 256 -- the runner refuses larger yields

if #param == 0 or #param % PUBKEY_LEN ~= 0 or #param // PUBKEY_LEN > MAX_ACCOUNTS then
  error("balances: param must be 1 to " .. MAX_ACCOUNTS .. " pubkeys of " .. PUBKEY_LEN
    .. " bytes, got " .. #param .. " bytes", 0)
end

-- An account listed twice is locked once.
local keys, seen = {}, {}
for offset = 1, #param, PUBKEY_LEN do
  local key = "account_" .. param:sub(offset, offset + PUBKEY_LEN - 1)
  if not seen[key] then
    seen[key] = true
    keys[#keys + 1] = key
  end
end

local result = {}
for first = 1, #keys, MAX_KEYS_PER_YIELD do
  local last = math.min(first + MAX_KEYS_PER_YIELD - 1, #keys)
  local batch = table.pack(coroutine.yield(table.unpack(keys, first, last)))
  for i = 1, batch.n do
    result[keys[first + i - 1]] = batch[i]
  end
end
return result
