//! The directory: which shard owns a key.

use crate::ShardId;
use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// Fixed SipHash keys: placement must be identical in every process and across releases.
const SIP_KEYS: (u64, u64) = (0x7061_7273_6563_2d64, 0x6972_6563_746f_7279);

/// Maps keys to shards by hashing, so that one busy contract's keys spread over every shard.
///
/// A pure function of the key and the shard count: any process that knows the topology computes
/// the same placement without asking anyone.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Directory {
    shard_count: u32,
}

impl Directory {
    /// # Panics
    /// When `shard_count` is zero; `ClusterConfig::validate` rejects such a topology first.
    pub fn new(shard_count: u32) -> Self {
        assert!(shard_count > 0, "a cluster has at least one shard");
        Self { shard_count }
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn shard_of(&self, key: &[u8]) -> ShardId {
        let mut hasher = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
        hasher.write(key);
        // Multiply-shift maps the 64-bit hash onto [0, shard_count) without the bias of `%`.
        let shard = (u128::from(hasher.finish()) * u128::from(self.shard_count)) >> 64;
        ShardId(shard as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_in_range() {
        let directory = Directory::new(4);
        for i in 0..1000u32 {
            let key = format!("account_{i}");
            let shard = directory.shard_of(key.as_bytes());
            assert!(shard.0 < 4);
            assert_eq!(shard, Directory::new(4).shard_of(key.as_bytes()));
        }
    }

    #[test]
    fn keys_spread_over_all_shards() {
        let directory = Directory::new(8);
        let mut counts = [0u32; 8];
        for i in 0..8000u32 {
            counts[directory.shard_of(&i.to_le_bytes()).0 as usize] += 1;
        }
        // Each shard gets 1000 ± 20% of uniformly chosen keys.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn one_shard_owns_everything() {
        let directory = Directory::new(1);
        assert_eq!(directory.shard_of(b"anything"), ShardId(0));
    }
}
