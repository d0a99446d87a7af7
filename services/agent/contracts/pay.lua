-- pay: a signed payment from one account to another.
--
-- param   = from(32) .. to(32) .. value(u64 LE) .. sequence(u64 LE) .. sig(64)   (144 bytes)
-- account = "account_" .. x-only pubkey(32) -> string.pack("<I8I8", balance, sequence)
-- sig     = BIP-340 Schnorr signature by `from` over
--           sha256("parsec-pay-v1" .. from .. to .. value_le8 .. sequence_le8)
--
-- Amounts and sequences are unsigned 64-bit. Lua integers are signed 64-bit, but string.unpack
-- "<I8" keeps the bit pattern and integer addition wraps, so we keep u64 bit patterns in Lua
-- integers and only ever compare them with math.ult; overflow is detected explicitly.

local param = ...
local pack, unpack, ult = string.pack, string.unpack, math.ult

local PARAM_LEN = 144
local ACCOUNT_LEN = 16

if #param ~= PARAM_LEN then
  error("pay: param must be " .. PARAM_LEN .. " bytes, got " .. #param .. " bytes", 0)
end

local from = param:sub(1, 32)
local to = param:sub(33, 64)
local value_le = param:sub(65, 72)
local sequence_le = param:sub(73, 80)
local sig = param:sub(81, 144)

-- Check the signature before locking anything: a forged payment must not take locks.
local msg = sha256("parsec-pay-v1" .. from .. to .. value_le .. sequence_le)
if not verify_schnorr(from, sig, msg) then
  error("bad signature", 0)
end

local value = unpack("<I8", value_le)
local sequence = unpack("<I8", sequence_le)

local function decode(record)
  if record == "" then
    return 0, 0
  end
  if #record ~= ACCOUNT_LEN then
    error("corrupt account record (" .. #record .. " bytes)", 0)
  end
  local balance, seq = unpack("<I8I8", record)
  return balance, seq
end

local from_key = "account_" .. from
local to_key = "account_" .. to

-- Both accounts in a single yield: one lock round trip.
local from_record, to_record
if from == to then
  from_record = coroutine.yield(from_key)
  to_record = from_record
else
  from_record, to_record = coroutine.yield(from_key, to_key)
end

local from_balance, from_sequence = decode(from_record)
local to_balance, to_sequence = decode(to_record)

-- Sequences may skip ahead (a client may lose a payment), never go back.
if ult(sequence, from_sequence) then
  error("stale sequence", 0)
end
if sequence == -1 then -- 2^64 - 1: the next sequence would wrap to 0
  error("sequence overflow", 0)
end
if ult(from_balance, value) then
  error("insufficient funds", 0)
end

local next_sequence = sequence + 1

if from == to then
  return { [from_key] = pack("<I8I8", from_balance, next_sequence) }
end

local credited = to_balance + value
if ult(credited, to_balance) then
  error("balance overflow", 0)
end

return {
  [from_key] = pack("<I8I8", from_balance - value, next_sequence),
  [to_key] = pack("<I8I8", credited, to_sequence),
}
