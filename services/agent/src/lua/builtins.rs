//! Native functions that contracts can call: hashing and signature checks, which would be far
//! too slow (and too easy to get wrong) in Lua.

use mlua::{Lua, Table, Value};
use secp256k1::{SECP256K1, XOnlyPublicKey, schnorr};
use sha2::{Digest, Sha256};

/// Builds the table of built-ins that the sandbox prelude exposes as globals.
pub(super) fn create(lua: &Lua) -> mlua::Result<Table> {
    let builtins = lua.create_table()?;
    builtins.raw_set(
        "sha256",
        lua.create_function(|lua, data: Value| match data {
            Value::String(data) => lua.create_string(sha256(&data.as_bytes())),
            // Worded like Lua's own argument errors, which is what contract authors know.
            other => Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'sha256' (string expected, got {})",
                other.type_name()
            ))),
        })?,
    )?;
    builtins.raw_set(
        "verify_schnorr",
        lua.create_function(|_, (pubkey, sig, msg): (Value, Value, Value)| {
            Ok(verify_schnorr(&pubkey, &sig, &msg))
        })?,
    )?;
    Ok(builtins)
}

pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `verify_schnorr(pubkey32, sig64, msg32)`: BIP-340 verification. Anything malformed (wrong
/// type or length, a pubkey that is not a curve point) is simply not a valid signature.
fn verify_schnorr(pubkey: &Value, sig: &Value, msg: &Value) -> bool {
    let (Some(pubkey), Some(sig), Some(msg)) = (
        fixed_bytes::<32>(pubkey),
        fixed_bytes::<64>(sig),
        fixed_bytes::<32>(msg),
    ) else {
        return false;
    };
    let Ok(pubkey) = XOnlyPublicKey::from_byte_array(pubkey) else {
        return false;
    };
    SECP256K1
        .verify_schnorr(&schnorr::Signature::from_byte_array(sig), &msg, &pubkey)
        .is_ok()
}

/// The bytes of a Lua string of exactly `N` bytes; numbers are not coerced.
fn fixed_bytes<const N: usize>(value: &Value) -> Option<[u8; N]> {
    match value {
        Value::String(s) => s.as_bytes().as_ref().try_into().ok(),
        _ => None,
    }
}
