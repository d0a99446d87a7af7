//! Ethereum transaction signing on libsecp256k1. alloy's local signer goes through k256, several
//! times slower per signature; the load generator shares its cores with the system it measures,
//! so every microsecond it spends signing is taken from the figures.

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use secp256k1::{Message, SECP256K1, SecretKey};

/// A private key that signs transaction hashes.
pub struct Secp256k1Signer {
    key: SecretKey,
    address: Address,
}

impl Secp256k1Signer {
    pub fn random() -> Self {
        Self::new(SecretKey::new(&mut rand::rng()))
    }

    /// From a hex private key, with or without `0x`.
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        hex.trim_start_matches("0x")
            .parse::<SecretKey>()
            .map(Self::new)
            .map_err(|e| format!("not a secp256k1 private key: {e}"))
    }

    fn new(key: SecretKey) -> Self {
        let public = key.public_key(SECP256K1).serialize_uncompressed();
        // The address is the last 20 bytes of the keccak of the key without its 0x04 prefix.
        let address = Address::from_slice(&keccak256(&public[1..])[12..]);
        Self { key, address }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn sign_hash(&self, hash: &B256) -> Signature {
        let signature = SECP256K1.sign_ecdsa_recoverable(Message::from_digest(hash.0), &self.key);
        let (recovery, bytes) = signature.serialize_compact();
        Signature::new(
            U256::from_be_slice(&bytes[..32]),
            U256::from_be_slice(&bytes[32..]),
            i32::from(recovery) == 1,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn matches_alloys_signer() {
        let ours = Secp256k1Signer::from_hex(KEY).unwrap();
        let alloy: PrivateKeySigner = KEY.parse().unwrap();
        assert_eq!(ours.address(), alloy.address());
        let hash = keccak256(b"a transfer");
        // RFC 6979 nonces: both sign deterministically, so the signatures are identical.
        assert_eq!(ours.sign_hash(&hash), alloy.sign_hash_sync(&hash).unwrap());
        assert_eq!(
            ours.sign_hash(&hash)
                .recover_address_from_prehash(&hash)
                .unwrap(),
            alloy.address()
        );
    }

    #[test]
    fn refuses_a_bad_key() {
        assert!(Secp256k1Signer::from_hex("0x1234").is_err());
        assert!(Secp256k1Signer::from_hex(&"00".repeat(32)).is_err());
    }
}
