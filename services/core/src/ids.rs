//! Identifiers of the parts of a cluster.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// Index of a shard: shard `i` owns the keys the directory maps to `i`.
    ShardId(u32),
    "shard-"
);
id_type!(
    /// An agent's identity. Shards record which agent owns each ticket so that a dead agent's
    /// tickets can be found and resolved.
    AgentId(u32),
    "agent-"
);
impl AgentId {
    /// Ids derived from names have this bit set; ids numbered in a topology stay below it, so
    /// the two kinds never collide.
    pub const NAMED: u32 = 1 << 31;

    /// The id of an agent known by a name (a Kubernetes pod name) rather than by a number in
    /// the topology: a stable hash of the name (SipHash-1-3 with fixed keys, the same on every
    /// platform and release) in the upper half of the id space.
    ///
    /// Collisions: two different names map to the same id with probability about
    /// n² / 2³² for n live agents (≈ 2·10⁻⁶ for 100). Shards treat a heartbeat from a new
    /// incarnation of an id as that agent having restarted, and recover the previous
    /// incarnation's tickets — which for two live colliding agents would abort the other's
    /// unprepared transactions (never break atomicity: recovery only commits what every
    /// participant prepared). The same name always gives the same id, which is what a
    /// restarted pod keeping its name needs.
    pub fn from_name(name: &str) -> AgentId {
        use std::hash::Hasher;
        let mut hasher = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        hasher.write(name.as_bytes());
        AgentId(Self::NAMED | (hasher.finish() as u32 & !Self::NAMED))
    }
}

id_type!(
    /// A replica's node id inside its Raft group. Explicit in the topology, never derived.
    NodeId(u64),
    "node-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_agents_get_stable_ids_apart_from_numbered_ones() {
        let a = AgentId::from_name("demo-agent-7d9f8b-x2k4p");
        assert_eq!(a, AgentId::from_name("demo-agent-7d9f8b-x2k4p"));
        assert_ne!(a, AgentId::from_name("demo-agent-7d9f8b-q8z1m"));
        assert!(a.0 >= AgentId::NAMED);
        // Pinned: the hash must not change between releases (a restarted agent keeps its id).
        assert_eq!(AgentId::from_name("agent-a"), AgentId(2_303_108_108));
        // Spread: 10,000 names in 2³¹ ids collide about n²/2³² ≈ 0.02 times on average (these
        // names happen to give one pair); a weak hash would give many.
        let ids: std::collections::HashSet<AgentId> = (0..10_000)
            .map(|i| AgentId::from_name(&format!("parsec-agent-{i}")))
            .collect();
        assert!(10_000 - ids.len() <= 2, "{} collisions", 10_000 - ids.len());
    }
}
