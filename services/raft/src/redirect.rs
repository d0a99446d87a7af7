//! "Not the leader" over gRPC, both ways: replicas refuse with `FAILED_PRECONDITION` naming the
//! leader in metadata, and [`LeaderFollower`] clients follow that hint across the replicas of a
//! group, with a deadline per attempt and one for the whole call, so that a failover delays a
//! request but does not fail it and no request waits forever.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::node::WriteError;
use crate::types::NodeId;

/// Metadata key naming the leader's id when a replica refuses a request.
pub const LEADER_ID: &str = "x-raft-leader-id";
/// Metadata key naming the leader's `host:port` when a replica refuses a request.
pub const LEADER_ADDRESS: &str = "x-raft-leader-addr";

/// The refusal of a replica that is not the leader; `leader` is `(id, "host:port")` if known.
pub fn not_leader(leader: Option<(NodeId, String)>) -> Status {
    let mut status = Status::failed_precondition(match &leader {
        Some((id, address)) => format!("not the leader; leader is node {id} at {address}"),
        None => "not the leader; no leader elected yet".to_owned(),
    });
    if let Some((id, address)) = leader {
        status
            .metadata_mut()
            .insert(LEADER_ID, MetadataValue::from(id));
        if let Ok(value) = MetadataValue::try_from(address) {
            status.metadata_mut().insert(LEADER_ADDRESS, value);
        }
    }
    status
}

/// A failed [`crate::RaftNode::write`] as a status a client can act on: where the leader is, or
/// try again later.
pub fn write_error_status(error: WriteError) -> Status {
    match error {
        WriteError::NotLeader { leader } => not_leader(leader),
        WriteError::Timeout(after) => {
            Status::unavailable(format!("not committed within {after:?}"))
        }
        WriteError::Fatal(message) => Status::unavailable(message),
    }
}

/// The leader address a refusal names, if any.
pub fn leader_hint(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(LEADER_ADDRESS)
        .and_then(|value| value.to_str().ok())
        .filter(|address| !address.is_empty())
}

/// Whether a status says the request was not executed and another replica (or the same one,
/// later) may take it: not the leader, or not reachable / not ready.
fn is_redirectable(status: &Status) -> bool {
    matches!(status.code(), Code::FailedPrecondition | Code::Unavailable)
        && (status.code() == Code::Unavailable || status.message().starts_with("not the leader"))
}

/// Makes a client for a member the topology did not list (one added by a membership change).
pub type Connect<C> = Box<dyn Fn(&str) -> Option<C> + Send + Sync>;

/// A client of a replicated group: one client per replica, and a memory of which one answered
/// last (the leader, as far as we know). A leader named by a hint but missing from the list (a
/// member added since the topology was written) is added to it.
pub struct LeaderFollower<C> {
    replicas: RwLock<Vec<(String, C)>>,
    current: AtomicUsize,
    connect: Option<Connect<C>>,
    /// Whether calls may run twice: then any failure but a refusal of the request itself is
    /// retried on the next replica (a timeout, a connection cut mid-call).
    idempotent: bool,
}

impl<C: Clone> LeaderFollower<C> {
    /// `replicas`: `(host:port, client)` of every member; must not be empty.
    pub fn new(replicas: Vec<(String, C)>) -> Self {
        LeaderFollower {
            replicas: RwLock::new(replicas),
            current: AtomicUsize::new(0),
            connect: None,
            idempotent: false,
        }
    }

    /// For calls that may run twice (a ticket range allocated twice just wastes a range): also
    /// retries timeouts and broken connections on the next replica.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Whether a failed call may be sent again (to the leader it names, or the next replica).
    fn may_retry(&self, status: &Status) -> bool {
        is_redirectable(status)
            || (self.idempotent
                && !matches!(
                    status.code(),
                    Code::InvalidArgument
                        | Code::OutOfRange
                        | Code::Unimplemented
                        | Code::PermissionDenied
                        | Code::Unauthenticated
                ))
    }

    /// Also follows hints to members not listed, connecting to them with `connect`.
    pub fn with_connect(mut self, connect: Connect<C>) -> Self {
        self.connect = Some(connect);
        self
    }

    /// The addresses of the replicas known so far.
    pub fn addresses(&self) -> Vec<String> {
        self.replicas
            .read()
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The replica tried first on the next call.
    pub fn current(&self) -> String {
        let replicas = self.replicas.read();
        replicas[self.index(replicas.len())].0.clone()
    }

    fn index(&self, len: usize) -> usize {
        self.current.load(Ordering::Relaxed) % len.max(1)
    }

    /// The position of `address` in the list, adding it if a connector is set.
    fn position_of(&self, address: &str) -> Option<usize> {
        if let Some(index) = self.replicas.read().iter().position(|(a, _)| a == address) {
            return Some(index);
        }
        let client = (self.connect.as_ref()?)(address)?;
        let mut replicas = self.replicas.write();
        if let Some(index) = replicas.iter().position(|(a, _)| a == address) {
            return Some(index);
        }
        tracing::info!(%address, "following a leader the topology does not list");
        replicas.push((address.to_owned(), client));
        Some(replicas.len() - 1)
    }

    /// Runs `call` on the replica believed to lead; follows "not the leader" hints at once and
    /// moves on to the next replica when one is down or not ready (backing off between rounds).
    /// Each attempt gets `attempt_timeout`; after `total` the last error is returned. Only
    /// refusals that mean "not executed" are retried, so `call` need not be idempotent.
    pub async fn call<T, F, Fut>(
        &self,
        attempt_timeout: Duration,
        total: Duration,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(C) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        if self.replicas.read().is_empty() {
            return Err(Status::unavailable("no replica given"));
        }
        let deadline = tokio::time::Instant::now() + total;
        let mut backoff = Duration::from_millis(5);
        let mut tried_since_progress = 0;
        loop {
            let (index, address, client) = {
                let replicas = self.replicas.read();
                let index = self.index(replicas.len());
                let (address, client) = &replicas[index];
                (index, address.clone(), client.clone())
            };
            let status = match tokio::time::timeout(attempt_timeout, call(client)).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) if self.may_retry(&status) => status,
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    let timed_out = Status::deadline_exceeded(format!(
                        "{address} did not answer within {attempt_timeout:?}"
                    ));
                    // The request may have run: repeat it only where that is harmless.
                    if !self.idempotent {
                        self.current.store(index + 1, Ordering::Relaxed);
                        return Err(timed_out);
                    }
                    timed_out
                }
            };
            let redirect = leader_hint(&status)
                .and_then(|leader| self.position_of(leader))
                .filter(|&leader| leader != index);
            self.current
                .store(redirect.unwrap_or(index + 1), Ordering::Relaxed);
            // Checked on redirects too: replicas with stale hints must not bounce a caller
            // between them forever.
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::new(
                    status.code(),
                    format!(
                        "no leader answered within {total:?}; last: {address}: {}",
                        status.message()
                    ),
                ));
            }
            if redirect.is_some() {
                continue;
            }
            tried_since_progress += 1;
            if tried_since_progress >= self.replicas.read().len() {
                // A whole round without a leader: an election is under way, or all are down.
                tried_since_progress = 0;
                let pause = backoff.min(deadline - tokio::time::Instant::now());
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    /// Replica `i` of a fake group: answers when it leads, else names the leader.
    #[derive(Clone)]
    struct Fake {
        index: usize,
        leader: Arc<AtomicUsize>,
        calls: Arc<AtomicU32>,
    }

    fn group(n: usize, leader: usize) -> (LeaderFollower<Fake>, Arc<AtomicU32>) {
        let leader = Arc::new(AtomicUsize::new(leader));
        let calls = Arc::new(AtomicU32::new(0));
        let replicas = (0..n)
            .map(|index| {
                (
                    format!("10.0.0.{index}:1"),
                    Fake {
                        index,
                        leader: leader.clone(),
                        calls: calls.clone(),
                    },
                )
            })
            .collect();
        (LeaderFollower::new(replicas), calls)
    }

    async fn ask(fake: Fake) -> Result<usize, Status> {
        fake.calls.fetch_add(1, Ordering::Relaxed);
        let leader = fake.leader.load(Ordering::Relaxed);
        if leader == usize::MAX {
            return Err(not_leader(None));
        }
        if fake.index == leader {
            Ok(fake.index)
        } else {
            Err(not_leader(Some((
                leader as u64,
                format!("10.0.0.{leader}:1"),
            ))))
        }
    }

    #[tokio::test]
    async fn follows_the_hint_to_the_leader_and_remembers_it() {
        let (group, calls) = group(3, 2);
        let t = Duration::from_secs(1);
        assert_eq!(group.call(t, t, ask).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::Relaxed), 2, "one refusal, one answer");
        assert_eq!(group.call(t, t, ask).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::Relaxed), 3, "straight to the leader");
        assert_eq!(group.current(), "10.0.0.2:1");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_leader_the_call_gives_up_at_its_deadline() {
        let (group, _) = group(3, usize::MAX);
        let t = Duration::from_millis(300);
        let error = group.call(t, t, ask).await.unwrap_err();
        assert_eq!(error.code(), Code::FailedPrecondition);
        assert!(error.message().contains("no leader answered"), "{error}");
    }

    #[tokio::test]
    async fn a_leader_missing_from_the_list_is_added_and_followed() {
        let (listed, calls) = group(3, 0);
        let leader = Arc::new(AtomicUsize::new(7));
        let first = listed.replicas.read().clone();
        let shared_leader = leader.clone();
        let shared_calls = calls.clone();
        let replicas = first
            .into_iter()
            .map(|(a, f)| {
                (
                    a,
                    Fake {
                        leader: shared_leader.clone(),
                        ..f
                    },
                )
            })
            .collect();
        let group = LeaderFollower::new(replicas).with_connect(Box::new(move |address| {
            let index = address
                .strip_prefix("10.0.0.")?
                .strip_suffix(":1")?
                .parse()
                .ok()?;
            Some(Fake {
                index,
                leader: shared_leader.clone(),
                calls: shared_calls.clone(),
            })
        }));
        let t = Duration::from_secs(1);
        assert_eq!(group.call(t, t, ask).await.unwrap(), 7);
        assert_eq!(group.current(), "10.0.0.7:1");
        assert_eq!(group.addresses().len(), 4);
        leader.store(1, Ordering::Relaxed);
        assert_eq!(group.call(t, t, ask).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn other_errors_are_returned_as_they_are() {
        let (group, calls) = group(3, 0);
        let t = Duration::from_secs(1);
        let error = group
            .call(t, t, |_| async {
                Err::<(), _>(Status::invalid_argument("bad"))
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::Relaxed), 0);
    }
}
