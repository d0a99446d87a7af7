//! The one openraft type configuration shared by every Parsec Raft group.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A log entry's payload: a batch of commands for the replicated application, each opaque bytes
/// encoded by the application. Concurrent writes share one entry (and one fsync), applied in
/// batch order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Vec<Vec<u8>>);

/// The results of applying a [`Command`]'s batch, in batch order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult(pub Vec<Vec<u8>>);

openraft::declare_raft_types!(
    /// Type configuration of every Parsec Raft group: `u64` node ids, nodes addressed by the
    /// `host:port` of their gRPC endpoint, opaque commands and results, in-memory snapshots.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Node id of a group member.
pub type NodeId = u64;
/// Address book entry of a group member (`addr` = `host:port` of its gRPC server).
pub type Node = openraft::BasicNode;
/// The openraft handle of a group.
pub type Raft = openraft::Raft<TypeConfig>;
/// Log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Log id.
pub type LogId = openraft::LogId<NodeId>;
/// Vote.
pub type Vote = openraft::Vote<NodeId>;
/// Storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
/// Metrics of a group member.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// Membership as stored in the log / state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
