//! The Ethereum state in the shard key space (DESIGN.md §5).
//!
//! Every key starts with a one-byte domain tag, so that kinds never collide (the C++ reference
//! let a transaction hash read as an account, reference §6.2):
//!
//! | tag | key | value |
//! |---|---|---|
//! | [`ACCOUNT`] | tag ‖ address (20 B) | [`encode_account`]; empty = no account |
//! | [`CODE`] | tag ‖ keccak256(code) (32 B) | the code bytes; immutable once written |
//! | [`STORAGE`] | tag ‖ keccak256(address ‖ slot) (32 B) | the word, big-endian without leading zeros; empty = zero |
//! | [`RECEIPT`], [`BLOCK`], [`TX_BY_HASH`], [`LOG_INDEX`] | reserved for the JSON-RPC layer | |
//!
//! Storage keys are hashed so that the slots of one popular token spread over every shard,
//! instead of all landing next to the token's account. Code is addressed by its hash: it never
//! changes once committed (Cancun SELFDESTRUCT rules), so agents can cache it.
//!
//! Zero values are stored as the empty value, which is what an absent key reads as: deleting a
//! slot and writing zero are the same write.

use alloy_primitives::{Address, B256, KECCAK256_EMPTY, U256, keccak256};
use bytes::Bytes;
use parsec_core::{Key, Value};

/// Domain tag of account keys.
pub const ACCOUNT: u8 = 0x01;
/// Domain tag of code-by-hash keys.
pub const CODE: u8 = 0x02;
/// Domain tag of storage-slot keys.
pub const STORAGE: u8 = 0x03;
/// Reserved: receipt by transaction hash.
pub const RECEIPT: u8 = 0x04;
/// Reserved: logical block by number.
pub const BLOCK: u8 = 0x05;
/// Reserved: transaction (and its block position) by hash.
pub const TX_BY_HASH: u8 = 0x06;
/// Reserved: log index entries.
pub const LOG_INDEX: u8 = 0x07;

/// Version byte of the account encoding; a new layout gets a new version.
const ACCOUNT_V1: u8 = 1;

/// The key of `address`'s account record.
pub fn account_key(address: &Address) -> Key {
    tagged(ACCOUNT, address.as_slice())
}

/// The key of the code whose keccak256 hash is `code_hash`.
pub fn code_key(code_hash: &B256) -> Key {
    tagged(CODE, code_hash.as_slice())
}

/// The key of storage `slot` of `address`: placed by hashing so one contract's slots spread
/// over every shard.
pub fn storage_key(address: &Address, slot: &U256) -> Key {
    let mut preimage = [0u8; 52];
    preimage[..20].copy_from_slice(address.as_slice());
    preimage[20..].copy_from_slice(&slot.to_be_bytes::<32>());
    tagged(STORAGE, keccak256(preimage).as_slice())
}

/// The key of a reserved kind (receipt, block, …) with an arbitrary body.
pub fn reserved_key(tag: u8, body: &[u8]) -> Key {
    tagged(tag, body)
}

fn tagged(tag: u8, body: &[u8]) -> Key {
    let mut key = Vec::with_capacity(1 + body.len());
    key.push(tag);
    key.extend_from_slice(body);
    Bytes::from(key)
}

/// What the shards store about an account. Code lives under [`code_key`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountRecord {
    pub nonce: u64,
    pub balance: U256,
    /// keccak256 of the code; `KECCAK256_EMPTY` for an account without code.
    pub code_hash: B256,
}

impl AccountRecord {
    /// An account the way Ethereum sees one that does not exist (EIP-161 "empty").
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && !self.has_code()
    }

    pub fn has_code(&self) -> bool {
        self.code_hash != KECCAK256_EMPTY && self.code_hash != B256::ZERO
    }
}

/// A stored value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("account record: unknown version {0}")]
    UnknownVersion(u8),
    #[error("account record: {0}")]
    Malformed(&'static str),
    #[error("storage word of {0} bytes (at most 32)")]
    StorageTooLong(usize),
}

/// Encodes an account compactly: `version ‖ len ‖ nonce ‖ len ‖ balance [‖ code hash]`, the
/// numbers big-endian without leading zeros, the code hash present only for contracts. An empty
/// account encodes as the empty value, so that it reads back as absent (EIP-161).
pub fn encode_account(account: &AccountRecord) -> Value {
    if account.is_empty() {
        return Value::new();
    }
    let nonce = account.nonce.to_be_bytes();
    let nonce = strip_zeros(&nonce);
    let balance = account.balance.to_be_bytes::<32>();
    let balance = strip_zeros(&balance);
    let mut out = Vec::with_capacity(3 + nonce.len() + balance.len() + 32);
    out.push(ACCOUNT_V1);
    out.push(nonce.len() as u8);
    out.extend_from_slice(nonce);
    out.push(balance.len() as u8);
    out.extend_from_slice(balance);
    if account.has_code() {
        out.extend_from_slice(account.code_hash.as_slice());
    }
    Value::from(out)
}

/// Decodes [`encode_account`]'s output; the empty value is the empty account. Strict: a
/// non-minimal or truncated record is an error, so one state has one encoding.
pub fn decode_account(value: &[u8]) -> Result<AccountRecord, StateError> {
    let Some((&version, rest)) = value.split_first() else {
        return Ok(AccountRecord {
            code_hash: KECCAK256_EMPTY,
            ..AccountRecord::default()
        });
    };
    if version != ACCOUNT_V1 {
        return Err(StateError::UnknownVersion(version));
    }
    let (nonce, rest) = take_number(rest, 8, "nonce")?;
    let (balance, rest) = take_number(rest, 32, "balance")?;
    let code_hash = match rest.len() {
        0 => KECCAK256_EMPTY,
        32 => {
            let hash = B256::from_slice(rest);
            if hash == KECCAK256_EMPTY {
                return Err(StateError::Malformed("explicit empty code hash"));
            }
            hash
        }
        _ => return Err(StateError::Malformed("trailing bytes")),
    };
    let mut nonce_bytes = [0u8; 8];
    nonce_bytes[8 - nonce.len()..].copy_from_slice(nonce);
    let account = AccountRecord {
        nonce: u64::from_be_bytes(nonce_bytes),
        balance: U256::from_be_slice(balance),
        code_hash,
    };
    if account.is_empty() {
        return Err(StateError::Malformed("empty account stored explicitly"));
    }
    Ok(account)
}

/// Splits `len ‖ bytes` off `input`; `bytes` is at most `max` long and has no leading zero.
fn take_number<'a>(
    input: &'a [u8],
    max: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), StateError> {
    let (&len, rest) = input
        .split_first()
        .ok_or(StateError::Malformed("truncated"))?;
    let len = usize::from(len);
    if len > max || rest.len() < len {
        return Err(StateError::Malformed(what));
    }
    let (number, rest) = rest.split_at(len);
    if number.first() == Some(&0) {
        return Err(StateError::Malformed("number with a leading zero"));
    }
    Ok((number, rest))
}

/// Encodes a storage word: big-endian without leading zeros; zero is the empty value.
pub fn encode_word(word: &U256) -> Value {
    let bytes = word.to_be_bytes::<32>();
    Value::copy_from_slice(strip_zeros(&bytes))
}

/// Decodes a storage word; the empty value is zero. Lenient about leading zeros: a word has
/// one meaning whatever its padding.
pub fn decode_word(value: &[u8]) -> Result<U256, StateError> {
    if value.len() > 32 {
        return Err(StateError::StorageTooLong(value.len()));
    }
    Ok(U256::from_be_slice(value))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use alloy_primitives::address;

    const A: Address = address!("0x00000000000000000000000000000000000000aa");

    #[test]
    fn kinds_never_collide() {
        let hash = B256::repeat_byte(0x11);
        let keys = [
            account_key(&A),
            code_key(&hash),
            storage_key(&A, &U256::ZERO),
            reserved_key(RECEIPT, hash.as_slice()),
            reserved_key(BLOCK, hash.as_slice()),
            reserved_key(TX_BY_HASH, hash.as_slice()),
            reserved_key(LOG_INDEX, hash.as_slice()),
        ];
        let tags: Vec<u8> = keys.iter().map(|k| k[0]).collect();
        assert_eq!(
            tags,
            [
                ACCOUNT, CODE, STORAGE, RECEIPT, BLOCK, TX_BY_HASH, LOG_INDEX
            ]
        );
        assert_eq!(keys[0].len(), 21);
        assert_eq!(keys[1].len(), 33);
        assert_eq!(keys[2].len(), 33);
    }

    #[test]
    fn storage_keys_hash_address_and_slot() {
        let mut preimage = A.to_vec();
        preimage.extend_from_slice(&U256::from(7).to_be_bytes::<32>());
        let expected = keccak256(&preimage);
        assert_eq!(&storage_key(&A, &U256::from(7))[1..], expected.as_slice());
        assert_ne!(
            storage_key(&A, &U256::from(7)),
            storage_key(&A, &U256::from(8))
        );
        let b = address!("0x00000000000000000000000000000000000000bb");
        assert_ne!(
            storage_key(&A, &U256::from(7)),
            storage_key(&b, &U256::from(7))
        );
    }

    #[test]
    fn one_token_spreads_over_every_shard() {
        let directory = parsec_core::Directory::new(8);
        let mut seen = std::collections::BTreeSet::new();
        for slot in 0..64u64 {
            seen.insert(directory.shard_of(&storage_key(&A, &U256::from(slot))));
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn accounts_round_trip_compactly() {
        let eoa = AccountRecord {
            nonce: 3,
            balance: U256::from(10).pow(U256::from(18)),
            code_hash: KECCAK256_EMPTY,
        };
        let encoded = encode_account(&eoa);
        assert_eq!(encoded.len(), 1 + 1 + 1 + 1 + 8);
        assert_eq!(decode_account(&encoded).unwrap(), eoa);

        let contract = AccountRecord {
            nonce: 1,
            balance: U256::ZERO,
            code_hash: B256::repeat_byte(0x42),
        };
        let encoded = encode_account(&contract);
        assert_eq!(encoded.len(), 1 + 2 + 1 + 32);
        assert_eq!(decode_account(&encoded).unwrap(), contract);

        let max = AccountRecord {
            nonce: u64::MAX,
            balance: U256::MAX,
            code_hash: B256::repeat_byte(1),
        };
        assert_eq!(decode_account(&encode_account(&max)).unwrap(), max);
    }

    #[test]
    fn the_empty_account_is_the_empty_value() {
        let empty = AccountRecord {
            code_hash: KECCAK256_EMPTY,
            ..AccountRecord::default()
        };
        assert!(encode_account(&empty).is_empty());
        assert_eq!(decode_account(&[]).unwrap(), empty);
    }

    #[test]
    fn malformed_accounts_are_refused() {
        for bad in [
            &[2u8, 0, 0][..],           // unknown version
            &[1, 0][..],                // truncated
            &[1, 9, 1, 2, 3][..],       // nonce longer than 8 bytes
            &[1, 1, 0, 0][..],          // leading zero
            &[1, 1, 1, 0, 5][..],       // trailing byte
            &[1, 0, 0][..],             // explicit empty account
            &[1, 1, 1, 1, 1, 1, 2][..], // partial code hash
        ] {
            assert!(decode_account(bad).is_err(), "{bad:?}");
        }
        let mut explicit_empty_hash = vec![1, 1, 1, 0];
        explicit_empty_hash.extend_from_slice(KECCAK256_EMPTY.as_slice());
        assert!(decode_account(&explicit_empty_hash).is_err());
    }

    #[test]
    fn words_are_minimal_and_zero_is_empty() {
        assert!(encode_word(&U256::ZERO).is_empty());
        assert_eq!(encode_word(&U256::from(0x1234)).as_ref(), &[0x12, 0x34]);
        assert_eq!(decode_word(&[]).unwrap(), U256::ZERO);
        assert_eq!(decode_word(&[0, 0, 5]).unwrap(), U256::from(5));
        assert_eq!(decode_word(&encode_word(&U256::MAX)).unwrap(), U256::MAX);
        assert!(decode_word(&[1; 33]).is_err());
    }
}
