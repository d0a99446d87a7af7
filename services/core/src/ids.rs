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
id_type!(
    /// A replica's node id inside its Raft group. Explicit in the topology, never derived.
    NodeId(u64),
    "node-"
);
