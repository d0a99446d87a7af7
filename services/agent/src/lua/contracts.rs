//! The contracts shipped with Parsec, and the encodings clients and benchmarks need to talk to
//! them. The Lua files are the reference; these helpers must stay in step with them.

use bytes::{BufMut, Bytes, BytesMut};
use parsec_core::{Key, Value};
use secp256k1::Keypair;

use super::builtins::sha256;

/// Signed payment between two accounts (see `contracts/pay.lua`).
pub const PAY: &str = include_str!("../../contracts/pay.lua");
/// Credits accounts; for benchmarks and development (see `contracts/mint.lua`).
pub const MINT: &str = include_str!("../../contracts/mint.lua");
/// Read-only query of account records (see `contracts/balances.lua`).
pub const BALANCES: &str = include_str!("../../contracts/balances.lua");

/// Prefix of account keys; the rest is the owner's x-only public key.
pub const ACCOUNT_PREFIX: &[u8] = b"account_";
/// Domain separator of the message a payment signs.
pub const PAY_DOMAIN: &[u8] = b"parsec-pay-v1";
/// Length of a `pay` parameter: from, to, value, sequence, signature.
pub const PAY_PARAM_LEN: usize = 32 + 32 + 8 + 8 + 64;
/// Length of one `mint` record: pubkey and amount.
pub const MINT_RECORD_LEN: usize = 32 + 8;
/// Most records in one `mint`, and most accounts in one `balances`.
pub const MAX_BATCH: usize = 256;
/// Length of an account record: balance and sequence.
pub const ACCOUNT_LEN: usize = 16;

/// A stored account record is neither absent nor 16 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("account record must be empty or {ACCOUNT_LEN} bytes, got {0} bytes")]
pub struct BadAccountRecord(pub usize);

/// The x-only public key (32 bytes) of `keypair`: what identifies an account.
pub fn pubkey(keypair: &Keypair) -> [u8; 32] {
    keypair.x_only_public_key().0.serialize()
}

/// The key of the account owned by `pubkey`.
pub fn account_key(pubkey: &[u8; 32]) -> Key {
    let mut key = BytesMut::with_capacity(ACCOUNT_PREFIX.len() + pubkey.len());
    key.put_slice(ACCOUNT_PREFIX);
    key.put_slice(pubkey);
    key.freeze()
}

/// An account record: balance and next expected sequence, both u64 little-endian.
pub fn encode_account(balance: u64, sequence: u64) -> Value {
    let mut record = BytesMut::with_capacity(ACCOUNT_LEN);
    record.put_u64_le(balance);
    record.put_u64_le(sequence);
    record.freeze()
}

/// `(balance, sequence)` of an account record; an absent account (empty value) is `(0, 0)`.
pub fn decode_account(record: &[u8]) -> Result<(u64, u64), BadAccountRecord> {
    if record.is_empty() {
        return Ok((0, 0));
    }
    match (
        record.len(),
        record.first_chunk::<8>(),
        record.last_chunk::<8>(),
    ) {
        (ACCOUNT_LEN, Some(balance), Some(sequence)) => {
            Ok((u64::from_le_bytes(*balance), u64::from_le_bytes(*sequence)))
        }
        _ => Err(BadAccountRecord(record.len())),
    }
}

/// The 32-byte message a payment's signature covers.
pub fn pay_message(from: &[u8; 32], to: &[u8; 32], value: u64, sequence: u64) -> [u8; 32] {
    let mut msg = Vec::with_capacity(PAY_DOMAIN.len() + 80);
    msg.extend_from_slice(PAY_DOMAIN);
    msg.extend_from_slice(from);
    msg.extend_from_slice(to);
    msg.extend_from_slice(&value.to_le_bytes());
    msg.extend_from_slice(&sequence.to_le_bytes());
    sha256(&msg)
}

/// The parameter of a payment of `value` from `keypair`'s account to `to`, signed by `keypair`.
/// `sequence` must be at least the sender's stored sequence.
pub fn pay_param(keypair: &Keypair, to: &[u8; 32], value: u64, sequence: u64) -> Bytes {
    let from = pubkey(keypair);
    let sig = keypair.sign_schnorr(&pay_message(&from, to, value, sequence));
    let mut param = BytesMut::with_capacity(PAY_PARAM_LEN);
    param.put_slice(&from);
    param.put_slice(to);
    param.put_u64_le(value);
    param.put_u64_le(sequence);
    param.put_slice(&sig.to_byte_array());
    param.freeze()
}

/// The parameter of a mint crediting each `(pubkey, amount)`; `mint` accepts 1 to
/// [`MAX_BATCH`] records.
pub fn mint_param(credits: &[([u8; 32], u64)]) -> Bytes {
    let mut param = BytesMut::with_capacity(credits.len() * MINT_RECORD_LEN);
    for (pubkey, amount) in credits {
        param.put_slice(pubkey);
        param.put_u64_le(*amount);
    }
    param.freeze()
}

/// The parameter of a balances query for `pubkeys`; `balances` accepts 1 to [`MAX_BATCH`].
pub fn balances_param(pubkeys: &[[u8; 32]]) -> Bytes {
    Bytes::from(pubkeys.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_round_trip() {
        for (balance, sequence) in [(0, 0), (1, 2), (u64::MAX, u64::MAX - 1)] {
            let record = encode_account(balance, sequence);
            assert_eq!(record.len(), ACCOUNT_LEN);
            assert_eq!(decode_account(&record), Ok((balance, sequence)));
        }
    }

    #[test]
    fn absent_account_is_empty() {
        assert_eq!(decode_account(b""), Ok((0, 0)));
    }

    #[test]
    fn malformed_account_is_an_error() {
        assert_eq!(decode_account(&[0; 15]), Err(BadAccountRecord(15)));
        assert_eq!(decode_account(&[0; 17]), Err(BadAccountRecord(17)));
    }

    #[test]
    fn account_key_layout() {
        let key = account_key(&[7; 32]);
        assert_eq!(&key[..8], b"account_");
        assert_eq!(&key[8..], &[7; 32]);
    }

    #[test]
    fn params_have_the_documented_layout() {
        let keypair = Keypair::from_seckey_byte_array(secp256k1::SECP256K1, [3; 32])
            .expect("valid secret key");
        let param = pay_param(&keypair, &[9; 32], 5, 6);
        assert_eq!(param.len(), PAY_PARAM_LEN);
        assert_eq!(&param[..32], &pubkey(&keypair));
        assert_eq!(&param[32..64], &[9; 32]);
        assert_eq!(&param[64..72], &5u64.to_le_bytes());
        assert_eq!(&param[72..80], &6u64.to_le_bytes());

        let mint = mint_param(&[([1; 32], 10), ([2; 32], 20)]);
        assert_eq!(mint.len(), 2 * MINT_RECORD_LEN);
        assert_eq!(&mint[72..80], &20u64.to_le_bytes());

        assert_eq!(balances_param(&[[1; 32], [2; 32]]).len(), 64);
    }
}
