//! Proposal batching: concurrent writes share one log entry, so one fsync (and one replication
//! round) serves many of them. openraft 0.9 appends and flushes each `client_write` on its own;
//! without batching a group commits about one write per fsync.
//!
//! Writers queue their command; one task takes everything queued (up to a limit) and proposes it
//! as one entry, keeping a few entries in flight so the log's pipeline stays full. While the
//! proposals in flight are at the limit, new writes pile up and form the next, larger batch.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::node::WriteError;
use crate::types::{Command, NodeId, Raft};

/// Commands in one entry at most.
const MAX_BATCH: usize = 512;
/// Bytes of commands in one entry at most (one large command still goes alone).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries proposed and not yet applied, at most.
const MAX_IN_FLIGHT: usize = 4;
/// Commands waiting for a batch, at most: beyond, writers wait for room (within their own
/// deadline), so a flood of requests backs up into its senders instead of this process.
const MAX_QUEUED: usize = 16_384;

/// What a queued write gets back: its result, or why the batch failed.
type Reply = oneshot::Sender<Result<Vec<u8>, WriteError>>;

/// The writers' side of the batcher.
#[derive(Clone)]
pub(crate) struct Batcher {
    queue: mpsc::Sender<(Vec<u8>, Reply)>,
}

impl Batcher {
    /// Starts the batching task for `raft`; `leader_of` names the leader for "not the leader"
    /// replies. The task ends when every `Batcher` clone is dropped.
    pub(crate) fn start(
        raft: Raft,
        leader_of: impl Fn(Option<NodeId>) -> Option<(NodeId, String)> + Send + Sync + 'static,
        write_seconds: WriteHistogram,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(run(raft, receiver, Arc::new(leader_of), write_seconds));
        Batcher { queue }
    }

    /// Queues `command` and waits for its result (the caller bounds the wait).
    pub(crate) async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, WriteError> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send((command, reply))
            .await
            .map_err(|_| WriteError::Fatal("raft node stopped".into()))?;
        result
            .await
            .map_err(|_| WriteError::Fatal("raft node stopped".into()))?
    }
}

type LeaderOf = Arc<dyn Fn(Option<NodeId>) -> Option<(NodeId, String)> + Send + Sync>;

/// Commit-and-apply latency of batches, set once the node exports metrics.
pub(crate) type WriteHistogram = Arc<std::sync::OnceLock<prometheus::Histogram>>;

async fn run(
    raft: Raft,
    mut receiver: mpsc::Receiver<(Vec<u8>, Reply)>,
    leader_of: LeaderOf,
    write_seconds: WriteHistogram,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = receiver.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match receiver.try_recv() {
                Ok(next) => {
                    bytes += next.0.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let leader_of = leader_of.clone();
        let write_seconds = write_seconds.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Vec<u8>>, Vec<Reply>) = batch.into_iter().unzip();
            let started = std::time::Instant::now();
            let outcome = raft.client_write(Command(commands)).await;
            drop(permit);
            if let (Ok(_), Some(histogram)) = (&outcome, write_seconds.get()) {
                histogram.observe(started.elapsed().as_secs_f64());
            }
            match outcome {
                Ok(response) => {
                    for (reply, result) in replies.into_iter().zip(response.data.0) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(error) => {
                    let error = match error {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            let leader = match (f.leader_id, f.leader_node) {
                                (Some(id), Some(node)) => Some((id, node.addr)),
                                (id, _) => leader_of(id),
                            };
                            WriteError::NotLeader { leader }
                        }
                        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                            WriteError::Fatal(e.to_string())
                        }
                        RaftError::Fatal(e) => WriteError::Fatal(e.to_string()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
