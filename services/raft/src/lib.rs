//! Raft replication for Parsec's shards and ticket machine: a reusable Raft group library,
//! generic over the replicated application ([`ReplicatedState`]).
//!
//! - [`log_store`]: the durable log, an append-only write-ahead log in `wal/` (one fsync per
//!   batch of appends = group commit);
//! - [`state_machine`]: the application plus snapshots on disk (`snapshot.bin`);
//! - [`network`]: node-to-node gRPC transport (`parsec.raft.v1.RaftTransport`);
//! - [`admin`]: operator gRPC API (`parsec.raft.v1.RaftAdmin`);
//! - [`node`]: [`RaftNode`], which ties them together;
//! - [`metrics`]: Prometheus metrics and readiness of a member;
//! - [`redirect`]: "not the leader" refusals and the clients that follow them;
//! - [`validate`]: checks of a peer's requests that openraft assumes and does not make.

pub mod admin;
mod batcher;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod redirect;
pub mod state_machine;
pub mod types;
pub mod validate;
mod wal;

/// Generated gRPC code of `proto/parsec/raft/v1/raft.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("parsec.raft.v1");
}

pub use log_store::LogStore;
pub use node::{CatchUpError, InitError, RaftConfig, RaftNode, ServeError, StartError, WriteError};
pub use redirect::LeaderFollower;
pub use state_machine::{ReplicatedState, StateMachine};
pub use types::{Command, CommandResult, Node, NodeId, TypeConfig};
