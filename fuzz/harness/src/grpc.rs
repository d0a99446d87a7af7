//! The gRPC services' message handling: Shard, TicketMachine and Agent, on a live in-process
//! cluster (two in-memory shards, the ticket machine, an agent with the shipped contracts
//! deployed). The Raft services have their own target (`raft`).
//!
//! An input is a sequence of calls, each `[method: u8][len: u16][protobuf bytes]`: the bytes
//! are decoded as the method's request type with prost (what tonic does; undecodable bytes
//! are refused there) and handed to the service's tonic trait implementation. Oracles, after
//! every call:
//! - no panic, and every call ends (a lock request may wait: the harness gives up after a
//!   deadline, as a client would, and the shard must clean up after it);
//! - each shard's lock table passes its invariants;
//! - committed data changes only through a one-phase prepare that voted COMMITTED (and then
//!   only its own keys, to its values), a successful commit, or a successful agent call: a
//!   refused request of any service leaves every shard's data (key count, bytes, and the
//!   values of every key the input mentions) as it was;
//! - ticket ranges never overlap and never go backwards; the sealed block height never drops.
//!
//! After the input, every ticket left on the shards is rolled back (or finished, if committed):
//! then no lock, waiter or ticket may remain anywhere — released means released.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parsec_core::{Key, Settings, WriteSet};
use parsec_proto as pb;
use parsec_proto::agent_server::Agent as _;
use parsec_proto::shard_server::Shard as _;
use parsec_proto::ticket_machine_server::TicketMachine as _;
use parsec_shard::engine::TicketState;
use parsec_ticketer::machine::MAX_RANGE;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::cluster::{AGENT, Cluster};
use crate::wire::{Reader, Writer};

/// How long a shard or ticket machine call may take before the harness gives up on it.
const CALL_DEADLINE: Duration = Duration::from_millis(100);
/// How long an agent call may take (it runs a contract and commits across shards in tens of
/// milliseconds, under sanitizers; one that waits on a lock the input holds waits this long).
const AGENT_DEADLINE: Duration = Duration::from_millis(500);
const MAX_CALLS: usize = 32;
/// No more calls start once an input has run this long (calls that wait add up).
const INPUT_BUDGET: Duration = Duration::from_secs(10);
/// Keys whose values are compared before and after every call.
const MAX_WATCHED: usize = 64;

/// Every method of the three services; an input's method byte indexes this list (bit 4
/// picks the shard for shard methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    ShardLock,
    ShardPrepare,
    ShardCommit,
    ShardRollback,
    ShardFinish,
    ShardGetTickets,
    ShardRead,
    ShardStatus,
    ShardHeartbeat,
    AllocateRange,
    ReportBlocks,
    GetBlockParts,
    AgentExecute,
    AgentDeploy,
    AgentRead,
    AgentClusterStatus,
}

pub const METHODS: [Method; 16] = [
    Method::ShardLock,
    Method::ShardPrepare,
    Method::ShardCommit,
    Method::ShardRollback,
    Method::ShardFinish,
    Method::ShardGetTickets,
    Method::ShardRead,
    Method::ShardStatus,
    Method::ShardHeartbeat,
    Method::AllocateRange,
    Method::ReportBlocks,
    Method::GetBlockParts,
    Method::AgentExecute,
    Method::AgentDeploy,
    Method::AgentRead,
    Method::AgentClusterStatus,
];

/// Builds inputs call by call (for the seed corpus).
#[derive(Default)]
pub struct Calls(Writer);

impl Calls {
    /// Adds a call of `method` (on shard `shard`, for shard methods) with `request`.
    pub fn call(&mut self, method: Method, shard: u8, request: &impl Message) -> &mut Self {
        let index = METHODS.iter().position(|m| *m == method).expect("listed") as u8;
        self.0
            .u8(index | (shard & 1) << 4)
            .bytes(&request.encode_to_vec());
        self
    }

    /// The input, and a fresh start for the next.
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.finish()
    }
}

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| crate::runtime().block_on(Cluster::start(Settings::default(), false)))
}

pub fn run(data: &[u8]) {
    let cluster = cluster();
    crate::runtime().block_on(async {
        let mut harness = Harness {
            cluster,
            watched: BTreeSet::new(),
            prepared: HashMap::new(),
            deployed: false,
        };
        // The background part of earlier commits (the deploys at start) must not land under
        // this input's oracles.
        harness.wait_for_agent().await;
        let started = std::time::Instant::now();
        let mut r = Reader::new(data);
        for _ in 0..MAX_CALLS {
            if r.is_empty() || started.elapsed() > INPUT_BUDGET {
                break;
            }
            let selector = r.u8();
            let method = METHODS[usize::from(selector & 0x0f)];
            let shard = usize::from(selector >> 4 & 1);
            harness.call(method, shard, r.bytes()).await;
        }
        harness.clean_up().await;
    });
}

/// What one shard holds, as far as the oracles look.
#[derive(Debug, PartialEq, Eq)]
struct ShardData {
    keys: u64,
    data_bytes: u64,
    values: Vec<(Key, Bytes)>,
}

/// Which data changes a call's outcome allows.
enum Allowed {
    Nothing,
    /// Shard `0` may change, its watched keys only as the write-set says (if known).
    Shard(usize, Option<WriteSet>),
    Anything,
}

struct Harness {
    cluster: &'static Cluster,
    watched: BTreeSet<Key>,
    /// Write-sets of the tickets that voted PREPARED, by (shard, ticket).
    prepared: HashMap<(usize, u64), WriteSet>,
    deployed: bool,
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// The reply, or `None` when the harness gave up waiting.
async fn within<T>(
    deadline: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Option<Result<T, Status>> {
    tokio::time::timeout(deadline, call)
        .await
        .ok()
        .map(|reply| reply.map(Response::into_inner))
}

impl Harness {
    fn watch<'a>(&mut self, keys: impl IntoIterator<Item = &'a Bytes>) {
        for key in keys {
            if self.watched.len() < MAX_WATCHED && !key.is_empty() && key.len() <= 4096 {
                self.watched.insert(key.clone());
            }
        }
    }

    fn snapshot(&self) -> Vec<ShardData> {
        let keys: Vec<Key> = self.watched.iter().cloned().collect();
        self.cluster
            .shards
            .iter()
            .map(|service| {
                let engine = service.engine();
                let status = engine.status();
                let values = engine
                    .read(&keys)
                    .expect("an in-memory shard always serves");
                ShardData {
                    keys: status.keys,
                    data_bytes: status.data_bytes,
                    values: keys.iter().cloned().zip(values).collect(),
                }
            })
            .collect()
    }

    async fn call(&mut self, method: Method, shard: usize, bytes: &[u8]) {
        let mentioned = mentioned_keys(method, bytes);
        self.watch(&mentioned);
        let before = self.snapshot();
        let allowed = match self.dispatch(method, shard, bytes).await {
            Some(allowed) => allowed,
            None => return,
        };
        for service in &self.cluster.shards {
            if let Err(violation) = service.engine().check_lock_table() {
                panic!("after {method:?}: lock table invariant violated: {violation}");
            }
        }
        let after = self.snapshot();
        match allowed {
            Allowed::Nothing => {
                assert_eq!(before, after, "{method:?} changed committed data")
            }
            Allowed::Shard(changed, writes) => {
                for (i, (b, a)) in before.iter().zip(&after).enumerate() {
                    if i != changed {
                        assert_eq!(b, a, "{method:?} on shard {changed} changed shard {i}");
                        continue;
                    }
                    let Some(writes) = &writes else { continue };
                    for ((key, old), (_, new)) in b.values.iter().zip(&a.values) {
                        match writes.get(key) {
                            Some(written) => assert_eq!(new, written, "{method:?}: {key:?}"),
                            None => assert_eq!(old, new, "{method:?} wrote {key:?} unasked"),
                        }
                    }
                }
            }
            Allowed::Anything => {}
        }
    }

    /// Decodes and runs one call; `None` when the bytes do not decode (tonic refuses them
    /// before any handler runs) or the outcome is not checkable (the harness gave up on it).
    async fn dispatch(&mut self, method: Method, shard: usize, bytes: &[u8]) -> Option<Allowed> {
        let cluster = self.cluster;
        let service = &cluster.shards[shard];
        let agent = parsec_agent::service::AgentService::new(cluster.agent.clone());
        let tm = &cluster.ticket_machine;
        let allowed = match method {
            Method::ShardLock => {
                let request: pb::LockRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.lock(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::ShardPrepare => {
                let request: pb::PrepareRequest = decode(bytes)?;
                let ticket = request.ticket;
                let writes: WriteSet = request
                    .writes
                    .iter()
                    .map(|kv| (kv.key.clone(), kv.value.clone()))
                    .collect();
                let reply = within(CALL_DEADLINE, service.prepare(Request::new(request))).await?;
                match reply {
                    Ok(reply) if reply.error.is_none() => {
                        let vote = pb::Vote::try_from(reply.vote);
                        assert!(vote.is_ok_and(|v| v != pb::Vote::Unspecified), "{reply:?}");
                        if vote == Ok(pb::Vote::Prepared) {
                            self.prepared.insert((shard, ticket), writes.clone());
                        }
                        if vote == Ok(pb::Vote::Committed) {
                            Allowed::Shard(shard, Some(writes))
                        } else {
                            Allowed::Nothing
                        }
                    }
                    _ => Allowed::Nothing,
                }
            }
            Method::ShardCommit => {
                let request: pb::TicketRequest = decode(bytes)?;
                let writes = self.prepared.get(&(shard, request.ticket)).cloned();
                let reply = within(CALL_DEADLINE, service.commit(Request::new(request))).await?;
                match reply {
                    Ok(reply) if reply.error.is_none() => Allowed::Shard(shard, writes),
                    _ => Allowed::Nothing,
                }
            }
            Method::ShardRollback => {
                let request: pb::TicketRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.rollback(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::ShardFinish => {
                let request: pb::TicketRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.finish(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::ShardGetTickets => {
                let request: pb::GetTicketsRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.get_tickets(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::ShardRead => {
                let request: pb::ReadRequest = decode(bytes)?;
                let count = request.keys.len();
                if let Ok(reply) =
                    within(CALL_DEADLINE, service.read(Request::new(request))).await?
                {
                    assert_eq!(reply.values.len(), count, "one value per key");
                }
                Allowed::Nothing
            }
            Method::ShardStatus => {
                let request: pb::StatusRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.status(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::ShardHeartbeat => {
                let request: pb::HeartbeatRequest = decode(bytes)?;
                let _ = within(CALL_DEADLINE, service.heartbeat(Request::new(request))).await;
                Allowed::Nothing
            }
            Method::AllocateRange => {
                let request: pb::AllocateRangeRequest = decode(bytes)?;
                let count = request.count;
                let reply = within(CALL_DEADLINE, tm.allocate_range(Request::new(request))).await?;
                check_range(count, reply);
                Allowed::Nothing
            }
            Method::ReportBlocks => {
                let request: pb::BlockReport = decode(bytes)?;
                if let Ok(clock) = within(
                    CALL_DEADLINE,
                    pb::ticket_machine_server::TicketMachine::report_blocks(
                        tm,
                        Request::new(request),
                    ),
                )
                .await?
                {
                    check_sealed(clock.sealed);
                }
                Allowed::Nothing
            }
            Method::GetBlockParts => {
                let request: pb::BlockPartsRequest = decode(bytes)?;
                let (from, to) = (request.from, request.to);
                let reply =
                    within(CALL_DEADLINE, tm.get_block_parts(Request::new(request))).await?;
                if let Ok(parts) = reply {
                    check_sealed(parts.sealed);
                    let blocks: Vec<u64> = parts.blocks.iter().map(|b| b.block).collect();
                    assert!(
                        blocks.windows(2).all(|w| w[0] < w[1]),
                        "blocks out of order"
                    );
                    assert!(
                        blocks
                            .iter()
                            .all(|&b| b >= from && b <= to && b <= parts.sealed),
                        "blocks {blocks:?} outside [{from}, {to}] or unsealed"
                    );
                }
                Allowed::Nothing
            }
            Method::AgentExecute => {
                let request: pb::ExecuteRequest = decode(bytes)?;
                let read_only = request.read_only;
                let reply = within(AGENT_DEADLINE, agent.execute(Request::new(request))).await;
                let allowed = match reply {
                    Some(Ok(reply)) if read_only || refused_for_good(reply.error.as_ref()) => {
                        Allowed::Nothing
                    }
                    Some(Err(_)) => Allowed::Nothing,
                    _ => Allowed::Anything,
                };
                self.wait_for_agent().await;
                allowed
            }
            Method::AgentDeploy => {
                let request: pb::DeployRequest = decode(bytes)?;
                let reply = within(AGENT_DEADLINE, agent.deploy(Request::new(request))).await;
                let allowed = match reply {
                    Some(Ok(reply)) if refused_for_good(reply.error.as_ref()) => Allowed::Nothing,
                    Some(Err(_)) => Allowed::Nothing,
                    _ => {
                        self.deployed = true;
                        Allowed::Anything
                    }
                };
                self.wait_for_agent().await;
                allowed
            }
            Method::AgentRead => {
                let request: pb::ReadRequest = decode(bytes)?;
                let count = request.keys.len();
                if let Some(Ok(reply)) =
                    within(AGENT_DEADLINE, agent.read(Request::new(request))).await
                {
                    assert_eq!(reply.values.len(), count, "one value per key");
                }
                Allowed::Nothing
            }
            Method::AgentClusterStatus => {
                let request: pb::StatusRequest = decode(bytes)?;
                let _ = within(AGENT_DEADLINE, agent.cluster_status(Request::new(request))).await;
                Allowed::Nothing
            }
        };
        Some(allowed)
    }

    /// Waits (bounded) until the agent has finished the background part of its last commit,
    /// so that it cannot change data under a later call's oracle.
    async fn wait_for_agent(&self) {
        for _ in 0..500 {
            let busy = self.cluster.shards.iter().any(|service| {
                service
                    .engine()
                    .tickets(Some(AGENT))
                    .is_ok_and(|tickets| !tickets.is_empty())
            });
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Rolls back (or finishes) every ticket left, then checks that nothing is left.
    async fn clean_up(&mut self) {
        self.wait_for_agent().await;
        for (i, service) in self.cluster.shards.iter().enumerate() {
            let engine = service.engine();
            for info in engine.tickets(None).expect("serving") {
                let result = match info.state {
                    TicketState::Committed => engine.finish(info.ticket).await,
                    _ => engine.rollback(info.ticket, info.attempt, false).await,
                };
                if let Err(error) = result {
                    panic!("shard {i}: cannot clean up {info:?}: {error}");
                }
            }
            let status = engine.status();
            assert_eq!(
                (status.tickets, status.locked_keys, status.waiting_requests),
                (0, 0, 0),
                "shard {i}: something survived the rollback of every ticket: {status:?}"
            );
            engine.check_lock_table().expect("lock table invariants");
        }
        if self.deployed {
            self.cluster.deploy_contracts().await;
        }
    }
}

/// The keys a request names, which the oracles watch from before the call on.
fn mentioned_keys(method: Method, bytes: &[u8]) -> Vec<Key> {
    match method {
        Method::ShardLock => decode::<pb::LockRequest>(bytes)
            .map(|r| r.locks.into_iter().map(|l| l.key).collect())
            .unwrap_or_default(),
        Method::ShardPrepare => decode::<pb::PrepareRequest>(bytes)
            .map(|r| r.writes.into_iter().map(|kv| kv.key).collect())
            .unwrap_or_default(),
        Method::ShardRead | Method::AgentRead => decode::<pb::ReadRequest>(bytes)
            .map(|r| r.keys)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Whether an agent call's error says nothing was committed (the contract or the request was
/// refused; not a timeout or a failure of the cluster, whose outcome may be unknown).
fn refused_for_good(error: Option<&pb::AgentError>) -> bool {
    use pb::AgentErrorCode as C;
    error.is_some_and(|e| {
        matches!(
            C::try_from(e.code),
            Ok(C::InvalidArgument
                | C::ContractNotFound
                | C::ContractInvalid
                | C::ContractFailed
                | C::InstructionBudgetExceeded
                | C::MemoryLimitExceeded)
        )
    })
}

/// Ranges only move forward, across every input of the process.
fn check_range(count: u64, reply: Result<pb::TicketRange, Status>) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    match reply {
        Ok(range) => {
            assert!(count > 0, "a range of 0 tickets was granted");
            assert!(
                range.count >= 1 && range.count <= MAX_RANGE.min(count),
                "{count} asked, {range:?} given"
            );
            let end = range
                .start
                .checked_add(range.count)
                .expect("range end overflows");
            let previous = NEXT.fetch_max(end, Ordering::SeqCst);
            assert!(
                range.start >= previous,
                "{range:?} overlaps tickets up to {previous}"
            );
        }
        Err(status) => assert_eq!(count, 0, "allocating {count} tickets failed: {status}"),
    }
}

/// The sealed height never goes back.
fn check_sealed(sealed: u64) {
    static SEALED: AtomicU64 = AtomicU64::new(0);
    let previous = SEALED.fetch_max(sealed, Ordering::SeqCst);
    assert!(
        sealed >= previous,
        "sealed height went from {previous} back to {sealed}"
    );
}
