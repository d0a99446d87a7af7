//! The Raft transport and admin API (`parsec.raft.v1.RaftTransport` and `RaftAdmin`): messages a
//! peer or an operator can send, handed to the tonic handlers of a live group member — a fresh
//! one per input, replicating a shard's state machine, with its log in a temporary directory.
//!
//! A peer is trusted by the protocol (mutual TLS keeps strangers out), but a malformed or
//! nonsensical message — entries out of order, a membership with no voter, a snapshot of
//! garbage, a term from the future — must not panic the process. An input is:
//! - a header byte: bit 0 set, the member has initialized a one-member group and leads it;
//!   clear, it is a fresh member waiting to be added (what a new replica sees first);
//! - up to 12 messages, each `[kind: u8][fields…]`: AppendEntries, Vote and InstallSnapshot built
//!   from typed fields (terms, log ids, Blank / Normal / Membership entries, real shard
//!   commands, real and broken snapshots) and postcard-encoded as a peer's transport does;
//!   transport requests with raw payload bytes; every admin call; and client writes.
//!
//! Every peer address in a message is rewritten to 127.0.0.1 (a closed port) before it reaches
//! the member, which dials the members it replicates to. Oracles: no panic; every call answers
//! or is given up after a deadline (membership changes legitimately wait for a quorum); after
//! the messages the member still answers its admin `Status`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};
use parsec_core::{AgentId, ShardId, Ticket, WriteSet};
use parsec_raft::pb;
use parsec_raft::pb::raft_admin_server::RaftAdmin as _;
use parsec_raft::pb::raft_transport_server::RaftTransport as _;
use parsec_raft::{Command, RaftConfig, RaftNode, ReplicatedState, TypeConfig};
use parsec_shard::state_machine::{self, StateMachine};
use serde::{Deserialize, Serialize};
use tonic::Request;

use crate::wire::{Reader, Writer};

/// This member's id; peers in messages are 0 to 5.
const ME: u64 = 1;
/// Where every peer "is": a closed port on the loopback interface.
const NOWHERE: &str = "127.0.0.1:1";
const MAX_MESSAGES: usize = 12;
const CALL_DEADLINE: Duration = Duration::from_millis(300);

pub fn run(data: &[u8]) {
    crate::runtime().block_on(run_async(data));
}

async fn run_async(data: &[u8]) {
    let mut r = Reader::new(data);
    let lead = r.bool();
    // tmpfs when there is one: the log's fsyncs cost nothing there.
    let dir = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory");
    let node = RaftNode::start(ME, dir.path(), StateMachine::new(), RaftConfig::default())
        .await
        .expect("a raft member starts");
    if lead {
        let members = BTreeMap::from([(ME, BasicNode::new(NOWHERE))]);
        node.initialize(members).await.expect("initializes");
        let elected = node
            .raft()
            .wait(Some(Duration::from_secs(10)))
            .state(
                openraft::ServerState::Leader,
                "a one-member group elects itself",
            )
            .await;
        elected.expect("leads");
    }
    let transport = node.transport_service();
    let admin = node.admin_service();
    for _ in 0..MAX_MESSAGES {
        if r.is_empty() {
            break;
        }
        let kind = r.u8();
        let call = Message::read(kind, &mut r);
        let _ = tokio::time::timeout(CALL_DEADLINE, call.send(&node, &transport, &admin)).await;
    }
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        admin.status(Request::new(pb::StatusRequest {})),
    )
    .await
    .expect("the member still answers Status")
    .expect("Status succeeds");
    assert_eq!(status.into_inner().node_id, ME);
    node.shutdown().await;
}

/// One message to the member.
enum Message {
    Transport(Rpc, Vec<u8>),
    Status,
    AddLearner(u64),
    ChangeMembership(Vec<u64>),
    Promote(u64),
    Remove(u64),
    Write(Vec<u8>),
}

#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl Message {
    fn read(kind: u8, r: &mut Reader) -> Self {
        match kind % 10 {
            0 => Message::Transport(Rpc::AppendEntries, encode(&append_entries(r))),
            1 => Message::Transport(Rpc::Vote, encode(&vote_request(r))),
            2 => Message::Transport(Rpc::InstallSnapshot, encode(&install_snapshot(r))),
            3 => {
                let rpc =
                    [Rpc::AppendEntries, Rpc::Vote, Rpc::InstallSnapshot][usize::from(r.u8() % 3)];
                Message::Transport(rpc, sanitized(rpc, r.bytes()))
            }
            4 => Message::Status,
            5 => Message::AddLearner(peer(r)),
            6 => Message::ChangeMembership((0..r.u8() % 4).map(|_| peer(r)).collect()),
            7 => Message::Promote(peer(r)),
            8 => Message::Remove(peer(r)),
            _ => Message::Write(command(r)),
        }
    }

    async fn send(
        self,
        node: &RaftNode<StateMachine>,
        transport: &parsec_raft::network::TransportService,
        admin: &parsec_raft::admin::AdminService<StateMachine>,
    ) {
        let payload = |bytes: Vec<u8>| {
            Request::new(pb::RaftRequest {
                payload: Bytes::from(bytes),
            })
        };
        match self {
            Message::Transport(Rpc::AppendEntries, bytes) => {
                let _ = transport.append_entries(payload(bytes)).await;
            }
            Message::Transport(Rpc::Vote, bytes) => {
                let _ = transport.vote(payload(bytes)).await;
            }
            Message::Transport(Rpc::InstallSnapshot, bytes) => {
                let _ = transport.install_snapshot(payload(bytes)).await;
            }
            Message::Status => {
                let _ = admin.status(Request::new(pb::StatusRequest {})).await;
            }
            Message::AddLearner(node_id) => {
                let request = pb::AddLearnerRequest {
                    node_id,
                    addr: NOWHERE.into(),
                };
                let _ = admin.add_learner(Request::new(request)).await;
            }
            Message::ChangeMembership(voters) => {
                let request = pb::ChangeMembershipRequest { voters };
                let _ = admin.change_membership(Request::new(request)).await;
            }
            Message::Promote(node_id) => {
                let request = pb::NodeRequest { node_id };
                let _ = admin.promote_learner(Request::new(request)).await;
            }
            Message::Remove(node_id) => {
                let request = pb::NodeRequest { node_id };
                let _ = admin.remove_member(Request::new(request)).await;
            }
            Message::Write(command) => {
                let _ = node.write(command).await;
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encodes")
}

/// A peer id (0 to 5; this member is 1).
fn peer(r: &mut Reader) -> u64 {
    u64::from(r.u8() % 6)
}

/// Small terms and indexes, so that messages meet the member's own log.
fn log_id(r: &mut Reader) -> LogId<u64> {
    let term = u64::from(r.u8() % 8);
    LogId::new(CommittedLeaderId::new(term, peer(r)), u64::from(r.u8()))
}

fn maybe_log_id(r: &mut Reader) -> Option<LogId<u64>> {
    r.bool().then(|| log_id(r))
}

fn vote(r: &mut Reader) -> Vote<u64> {
    let (term, leader) = (u64::from(r.u8() % 8), peer(r));
    if r.bool() {
        Vote::new_committed(term, leader)
    } else {
        Vote::new(term, leader)
    }
}

/// The serde form of openraft's [`Membership`], whose fields are private and which deserializes
/// without checks: how a peer can send one that no constructor would build (no voter at all,
/// voters without an address).
#[derive(Serialize, Deserialize)]
struct MembershipFields {
    configs: Vec<BTreeSet<u64>>,
    nodes: BTreeMap<u64, BasicNode>,
}

fn membership(r: &mut Reader) -> Membership<u64, BasicNode> {
    let configs = (0..r.u8() % 3)
        .map(|_| (0..r.u8() % 4).map(|_| peer(r)).collect())
        .collect();
    let nodes = (0..r.u8() % 5)
        .map(|_| (peer(r), BasicNode::new(NOWHERE)))
        .collect();
    let fields = MembershipFields { configs, nodes };
    postcard::from_bytes(&encode(&fields)).expect("the same serde layout")
}

/// A shard command as the shard's log encodes it, or bytes that are none.
fn command(r: &mut Reader) -> Vec<u8> {
    let ticket = Ticket(u64::from(r.u8()));
    let attempt = u32::from(r.u8() % 3);
    let writes = |r: &mut Reader| -> WriteSet {
        (0..r.u8() % 3)
            .map(|_| {
                (
                    Bytes::copy_from_slice(r.bytes()),
                    Bytes::copy_from_slice(r.bytes()),
                )
            })
            .collect()
    };
    let command = match r.u8() % 6 {
        0 => state_machine::Command::Prepare {
            ticket,
            attempt,
            agent: AgentId(u32::from(r.u8())),
            writes: writes(r),
            participants: vec![ShardId(0), ShardId(u32::from(r.u8() % 3))],
        },
        1 => state_machine::Command::Commit { ticket },
        2 => state_machine::Command::CommitOnePhase {
            ticket,
            attempt,
            writes: writes(r),
        },
        3 => state_machine::Command::Abort {
            ticket,
            attempt,
            fence: r.bool(),
        },
        4 => state_machine::Command::Finish { ticket },
        _ => return r.bytes().to_vec(),
    };
    state_machine::encode_command(&command)
}

fn append_entries(r: &mut Reader) -> AppendEntriesRequest<TypeConfig> {
    let vote = vote(r);
    let prev_log_id = maybe_log_id(r);
    let consecutive = r.bool();
    let first = prev_log_id.map_or(0, |id| id.index + 1);
    let entries = (0..r.u8() % 5)
        .map(|i| {
            let mut id = log_id(r);
            if consecutive {
                id.index = first + u64::from(i);
            }
            let payload = match r.u8() % 3 {
                0 => EntryPayload::Blank,
                1 => EntryPayload::Normal(Command((0..r.u8() % 3).map(|_| command(r)).collect())),
                _ => EntryPayload::Membership(membership(r)),
            };
            Entry {
                log_id: id,
                payload,
            }
        })
        .collect();
    AppendEntriesRequest {
        vote,
        prev_log_id,
        entries,
        leader_commit: maybe_log_id(r),
    }
}

fn vote_request(r: &mut Reader) -> VoteRequest<u64> {
    VoteRequest {
        vote: vote(r),
        last_log_id: maybe_log_id(r),
    }
}

fn install_snapshot(r: &mut Reader) -> InstallSnapshotRequest<TypeConfig> {
    let vote = vote(r);
    let last_log_id = maybe_log_id(r);
    let membership_log_id = maybe_log_id(r);
    let last_membership = StoredMembership::new(membership_log_id, membership(r));
    let snapshot_id = r.string();
    let offset = u64::from(r.u16());
    let data = if r.bool() {
        // A real state, as a leader would send it, from a few commands.
        let mut state = StateMachine::new();
        for _ in 0..r.u8() % 4 {
            ReplicatedState::apply(&mut state, &command(r));
        }
        state.snapshot()
    } else {
        r.bytes().to_vec()
    };
    InstallSnapshotRequest {
        vote,
        meta: SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        },
        offset,
        data,
        done: r.bool(),
    }
}

/// Raw payload bytes, with any peer address rewritten to [`NOWHERE`] when they decode (the
/// member would dial it).
fn sanitized(rpc: Rpc, bytes: &[u8]) -> Vec<u8> {
    fn rewrite(membership: &Membership<u64, BasicNode>) -> Membership<u64, BasicNode> {
        let fields: MembershipFields =
            postcard::from_bytes(&encode(membership)).expect("the same serde layout");
        let nodes = fields
            .nodes
            .into_keys()
            .map(|id| (id, BasicNode::new(NOWHERE)))
            .collect();
        let fields = MembershipFields {
            configs: fields.configs,
            nodes,
        };
        postcard::from_bytes(&encode(&fields)).expect("the same serde layout")
    }
    match rpc {
        Rpc::AppendEntries => match postcard::from_bytes::<AppendEntriesRequest<TypeConfig>>(bytes)
        {
            Ok(mut request) => {
                for entry in &mut request.entries {
                    if let EntryPayload::Membership(m) = &entry.payload {
                        entry.payload = EntryPayload::Membership(rewrite(m));
                    }
                }
                encode(&request)
            }
            Err(_) => bytes.to_vec(),
        },
        Rpc::InstallSnapshot => {
            match postcard::from_bytes::<InstallSnapshotRequest<TypeConfig>>(bytes) {
                Ok(mut request) => {
                    let stored = &request.meta.last_membership;
                    request.meta.last_membership =
                        StoredMembership::new(*stored.log_id(), rewrite(stored.membership()));
                    encode(&request)
                }
                Err(_) => bytes.to_vec(),
            }
        }
        Rpc::Vote => bytes.to_vec(),
    }
}

/// An input of `messages` (already encoded by [`Writer`]) for a member that leads or not (for
/// the seed corpus).
pub fn input(lead: bool, messages: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.bool(lead).rest(messages);
    w.finish()
}
