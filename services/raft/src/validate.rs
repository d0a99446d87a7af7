//! Checks of a peer's requests before openraft sees them. A peer is trusted by the protocol
//! (mutual TLS keeps strangers out), but openraft trusts it further: it asserts (in builds with
//! debug assertions, panicking its core task) or silently rewrites its log (without them) on
//! requests that no correct member sends. Such a request is refused instead, as malformed.
//! Found by the `raft` fuzz target; each rule names what it prevents.

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{BasicNode, LogId, Membership, RaftLogId, Vote};

use crate::types::{NodeId, TypeConfig};

/// A refused request: why.
pub type Refusal = String;

/// The member a vote names as leader or candidate.
fn sender(vote: &Vote<NodeId>) -> Option<NodeId> {
    vote.leader_id().voted_for()
}

/// Members never send requests to themselves. A leader receiving its own vote back keeps
/// leading while openraft handles the request as a follower (`assertion failed:
/// self.leader.is_none()`).
fn not_from_me(me: NodeId, vote: &Vote<NodeId>) -> Result<(), Refusal> {
    match sender(vote) {
        Some(id) if id == me => Err(format!("a request in the name of this member ({me})")),
        _ => Ok(()),
    }
}

/// Entries and snapshots come from an elected leader, whose vote is committed: openraft
/// records what it accepts from a leader only under a committed vote (`vote must be
/// committed`).
fn from_a_leader(vote: &Vote<NodeId>) -> Result<(), Refusal> {
    if vote.is_committed() {
        Ok(())
    } else {
        Err(format!(
            "a leader's request under an uncommitted vote {vote}"
        ))
    }
}

/// A log id written by a leader after the sender (log ids order by term, then leader, then
/// index): no member holds one.
fn not_from_the_future(
    vote: &Vote<NodeId>,
    what: &str,
    id: Option<&LogId<NodeId>>,
) -> Result<(), Refusal> {
    match id {
        Some(id) if id.leader_id > *vote.leader_id() => Err(format!(
            "{what} {id} was written after the sender's leadership {}",
            vote.leader_id()
        )),
        _ => Ok(()),
    }
}

/// What a request is checked against: this member's committed log id, and its own log ids.
pub trait LocalLog {
    fn committed(&self) -> Option<LogId<NodeId>>;
    /// The local entry's id at `index`, if the log still holds it.
    fn log_id_at(&self, index: u64) -> Option<LogId<NodeId>>;
}

impl LocalLog for crate::log_store::CommittedHandle {
    fn committed(&self) -> Option<LogId<NodeId>> {
        self.get()
    }

    fn log_id_at(&self, index: u64) -> Option<LogId<NodeId>> {
        crate::log_store::CommittedHandle::log_id_at(self, index)
    }
}

/// At or below the committed index every correct leader holds exactly the committed log:
/// openraft takes any log id there as matching its own without looking (`assertion failed:
/// Some(log_id) <= self.committed()`, and `Some(entries[0].get_log_id()) >
/// self.state.log_ids.last()` when what it appends next does not follow its own entry), and
/// would truncate committed entries after it. So a log id there must be the local one where the
/// log still holds it, and never greater than the committed one.
fn consistent_with_committed(
    local: &impl LocalLog,
    what: &str,
    id: &LogId<NodeId>,
) -> Result<(), Refusal> {
    let Some(committed) = local.committed() else {
        return Ok(());
    };
    if id.index > committed.index {
        return Ok(());
    }
    let contradicts = match local.log_id_at(id.index) {
        Some(own) => own != *id,
        None => *id > committed,
    };
    if contradicts {
        return Err(format!(
            "{what} {id} contradicts the committed log (committed: {committed})"
        ));
    }
    Ok(())
}

/// Every config of a (joint) membership has a voter, at most two configs, and every voter an
/// address: what openraft's own constructors guarantee, and deserialization does not.
pub fn membership(membership: &Membership<NodeId, BasicNode>) -> Result<(), Refusal> {
    let configs = membership.get_joint_config();
    if configs.is_empty() || configs.len() > 2 || configs.iter().any(|c| c.is_empty()) {
        return Err(format!("a membership with configs {configs:?}"));
    }
    match membership
        .voter_ids()
        .find(|id| membership.get_node(id).is_none())
    {
        Some(id) => Err(format!("voter {id} has no address")),
        None => Ok(()),
    }
}

pub fn append_entries(
    me: NodeId,
    local: &impl LocalLog,
    request: &AppendEntriesRequest<TypeConfig>,
) -> Result<(), Refusal> {
    let vote = &request.vote;
    not_from_me(me, vote)?;
    from_a_leader(vote)?;
    not_from_the_future(vote, "prev_log_id", request.prev_log_id.as_ref())?;
    not_from_the_future(vote, "leader_commit", request.leader_commit.as_ref())?;
    if let Some(prev) = &request.prev_log_id {
        consistent_with_committed(local, "prev_log_id", prev)?;
    }
    // Entries follow prev_log_id one index at a time, in log id order: openraft appends them
    // as they come (`debug_assert!(x.get_log_id().index == prev_log_id.next_index())`, and
    // `new_log_id: T0-N0-1, last: T0-N4-0` for a leader id going back).
    let mut previous = request.prev_log_id;
    for entry in &request.entries {
        let id = entry.get_log_id();
        let expected = previous.map_or(0, |p| p.index + 1);
        if id.index != expected {
            return Err(format!("entry {id} where index {expected} was due"));
        }
        if previous.is_some_and(|p| p.leader_id > id.leader_id) {
            return Err(format!("entry {id} of a leader before its predecessor's"));
        }
        not_from_the_future(vote, "entry", Some(id))?;
        consistent_with_committed(local, "entry", id)?;
        if let openraft::EntryPayload::Membership(m) = &entry.payload {
            membership(m)?;
        }
        previous = Some(*id);
    }
    Ok(())
}

pub fn vote(me: NodeId, request: &VoteRequest<NodeId>) -> Result<(), Refusal> {
    not_from_me(me, &request.vote)?;
    not_from_the_future(&request.vote, "last_log_id", request.last_log_id.as_ref())
}

pub fn install_snapshot(
    me: NodeId,
    request: &InstallSnapshotRequest<TypeConfig>,
) -> Result<(), Refusal> {
    let vote = &request.vote;
    not_from_me(me, vote)?;
    from_a_leader(vote)?;
    let meta = &request.meta;
    not_from_the_future(vote, "snapshot", meta.last_log_id.as_ref())?;
    membership(meta.last_membership.membership())
}
