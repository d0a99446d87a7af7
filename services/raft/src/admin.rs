//! Operator API of a group member (`parsec.raft.v1.RaftAdmin`): status and membership changes.
//!
//! Membership changes only succeed on the leader; elsewhere they fail with `FAILED_PRECONDITION`,
//! a message naming the leader, and `x-raft-leader-id` / `x-raft-leader-addr` metadata.
//!
//! Leadership transfer: openraft 0.9.25 has no `transfer_leader` (only `trigger().elect()`, which
//! voters reject while the current leader's lease is valid). To move leadership away from a node,
//! remove it with `RemoveMember`: the remaining voters elect a new leader.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use tonic::{Request, Response, Status};

use crate::StateMachine;
use crate::log_store::CommittedHandle;
use crate::pb;
use crate::types::{NodeId, Raft, RaftMetrics, TypeConfig};

/// Server side of the admin API.
pub struct AdminService<S> {
    raft: Raft,
    committed: CommittedHandle,
    sm: StateMachine<S>,
}

impl<S> AdminService<S> {
    pub(crate) fn new(raft: Raft, committed: CommittedHandle, sm: StateMachine<S>) -> Self {
        AdminService {
            raft,
            committed,
            sm,
        }
    }
}

/// Builds the status reply from openraft metrics plus what only the storage knows.
pub(crate) fn status_reply(
    m: &RaftMetrics,
    commit_index: Option<u64>,
    snapshot_size: u64,
    log_syncs: u64,
) -> pb::StatusReply {
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    let leader_addr = m
        .current_leader
        .and_then(|id| membership.get_node(&id))
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    pb::StatusReply {
        node_id: m.id,
        role: role.to_string(),
        leader_id: m.current_leader,
        leader_addr,
        term: m.current_term,
        voters,
        learners,
        commit_index,
        applied_index: m.last_applied.map(|l| l.index),
        last_log_index: m.last_log_index,
        snapshot_index: m.snapshot.map(|l| l.index),
        snapshot_size_bytes: snapshot_size,
        purged_index: m.purged.map(|l| l.index),
        log_syncs,
    }
}

/// Maps a failed membership write to a gRPC status; "not leader" names the leader.
pub(crate) fn write_status(
    e: RaftError<NodeId, ClientWriteError<NodeId, openraft::BasicNode>>,
) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            crate::redirect::not_leader(f.leader_id.map(|id| {
                let address = f.leader_node.map(|n| n.addr).unwrap_or_default();
                (id, address)
            }))
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        RaftError::Fatal(e) => Status::unavailable(format!("raft stopped: {e}")),
    }
}

fn membership_reply(resp: openraft::raft::ClientWriteResponse<TypeConfig>) -> pb::MembershipReply {
    let (voters, learners) = match &resp.membership {
        Some(m) => (m.voter_ids().collect(), m.learner_ids().collect()),
        None => (Vec::new(), Vec::new()),
    };
    pb::MembershipReply {
        log_index: resp.log_id.index,
        voters,
        learners,
    }
}

impl<S> AdminService<S> {
    fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    async fn change_voters(
        &self,
        voters: BTreeSet<NodeId>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        if voters.is_empty() {
            return Err(Status::invalid_argument("the voter set must not be empty"));
        }
        let resp = self
            .raft
            .change_membership(voters, false)
            .await
            .map_err(write_status)?;
        Ok(Response::new(membership_reply(resp)))
    }
}

#[tonic::async_trait]
impl<S: crate::ReplicatedState> pb::raft_admin_server::RaftAdmin for AdminService<S> {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let m = self.raft.metrics().borrow().clone();
        Ok(Response::new(status_reply(
            &m,
            self.committed.get().map(|l| l.index),
            self.sm.snapshot_size(),
            self.committed.syncs(),
        )))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let req = request.into_inner();
        if req.addr.is_empty() {
            return Err(Status::invalid_argument("addr is required"));
        }
        let resp = self
            .raft
            .add_learner(req.node_id, openraft::BasicNode::new(req.addr), true)
            .await
            .map_err(write_status)?;
        Ok(Response::new(membership_reply(resp)))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.change_voters(request.into_inner().voters.into_iter().collect())
            .await
    }

    async fn promote_learner(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let id = request.into_inner().node_id;
        let mut voters = self.voters();
        voters.insert(id);
        self.change_voters(voters).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        let id = request.into_inner().node_id;
        let mut voters = self.voters();
        if voters.remove(&id) {
            return self.change_voters(voters).await;
        }
        let resp = self
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(write_status)?;
        Ok(Response::new(membership_reply(resp)))
    }
}
