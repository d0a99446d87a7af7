-- mint: credits accounts. For benchmarks and development: like PArSEC's Lua model, keys carry
-- no permissions yet, so anyone may mint.
--
-- param   = (pubkey(32) .. amount(u64 LE)) repeated 1..256 times
-- account = "account_" .. pubkey(32) -> string.pack("<I8I8", balance, sequence)
--
-- Balances are u64 bit patterns held in Lua integers (see pay.lua); overflow is an error.

local param = ...
local pack, unpack, ult = string.pack, string.unpack, math.ult

local RECORD_LEN = 40
local MAX_RECORDS = 256
local ACCOUNT_LEN = 16
local MAX_KEYS_PER_YIELD = 256 -- the runner refuses larger yields

if #param == 0 or #param % RECORD_LEN ~= 0 or #param // RECORD_LEN > MAX_RECORDS then
  error("mint: param must be 1 to " .. MAX_RECORDS .. " records of " .. RECORD_LEN
    .. " bytes, got " .. #param .. " bytes", 0)
end

-- Sum the amounts per account first, so that an account listed twice is locked once.
local keys, amounts = {}, {}
for offset = 1, #param, RECORD_LEN do
  local key = "account_" .. param:sub(offset, offset + 31)
  local amount = unpack("<I8", param, offset + 32)
  local current = amounts[key]
  if current == nil then
    keys[#keys + 1] = key
    current = 0
  end
  local sum = current + amount
  if ult(sum, current) then
    error("mint: amount overflow", 0)
  end
  amounts[key] = sum
end

-- All keys in as few yields as the runner allows (one for up to 256 accounts).
local records = {}
for first = 1, #keys, MAX_KEYS_PER_YIELD do
  local last = math.min(first + MAX_KEYS_PER_YIELD - 1, #keys)
  local batch = table.pack(coroutine.yield(table.unpack(keys, first, last)))
  for i = 1, batch.n do
    records[first + i - 1] = batch[i]
  end
end

local writes = {}
for i, key in ipairs(keys) do
  local record = records[i]
  local balance, sequence = 0, 0
  if record ~= "" then
    if #record ~= ACCOUNT_LEN then
      error("corrupt account record (" .. #record .. " bytes)", 0)
    end
    balance, sequence = unpack("<I8I8", record)
  end
  local credited = balance + amounts[key]
  if ult(credited, balance) then
    error("balance overflow", 0)
  end
  writes[key] = pack("<I8I8", credited, sequence)
end
return writes
