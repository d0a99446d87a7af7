//! The data plane's Raft admin API (`parsec.raft.v1.RaftAdmin`), behind a trait so that the
//! controller-flow tests can fake the data plane.
//!
//! Membership changes succeed only on the leader (a follower answers `FAILED_PRECONDITION` with
//! `x-raft-leader-addr`). openraft 0.9 has no leadership transfer: to move leadership away from a
//! member, the operator removes it (`RemoveMember` on the leader itself) and the remaining voters
//! elect a new leader; the member is added back (learner, then voter) after its restart.
//!
//! With `spec.tls`, every member's admin API accepts only clients with a certificate of the
//! cluster's CA: each call takes the cluster's [`Tls`] (read from its Secret) and presents it.

use std::time::Duration;

use async_trait::async_trait;
use parsec_raft::pb;
use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_transport::Tls;
use thiserror::Error;
use tonic::transport::Channel;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AdminError {
    #[error("{addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    #[error("{addr} is not the leader (leader: {leader})")]
    NotLeader { addr: String, leader: String },
    #[error("{addr} refused: {message}")]
    Refused { addr: String, message: String },
}

/// What one member says about itself and its group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberState {
    pub node_id: u64,
    /// leader, follower, candidate, learner or shutdown.
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub applied_index: Option<u64>,
}

/// Where and how to reach one member's admin API: its `host:port`, and the cluster's
/// certificate when the cluster uses mutual TLS (`None`: plain gRPC).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub addr: &'a str,
    pub tls: Option<&'a Tls>,
}

#[async_trait]
pub trait RaftAdmin: Send + Sync {
    async fn status(&self, member: Target<'_>) -> Result<MemberState, AdminError>;
    /// Adds `node_id` at `node_addr` as a learner; returns once it has caught up.
    async fn add_learner(
        &self,
        leader: Target<'_>,
        node_id: u64,
        node_addr: &str,
    ) -> Result<(), AdminError>;
    async fn promote_learner(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError>;
    /// Removes a voter or learner; removing the leader itself makes the others elect.
    async fn remove_member(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError>;
}

/// The real client: one short-lived gRPC channel per call (the operator calls rarely).
#[derive(Clone, Debug)]
pub struct GrpcRaftAdmin {
    pub connect_timeout: Duration,
    pub status_timeout: Duration,
    /// AddLearner blocks until the learner caught up, which may take a while on a big log.
    pub membership_timeout: Duration,
}

impl Default for GrpcRaftAdmin {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            status_timeout: Duration::from_secs(3),
            membership_timeout: Duration::from_secs(120),
        }
    }
}

impl GrpcRaftAdmin {
    async fn client(
        &self,
        member: Target<'_>,
        timeout: Duration,
    ) -> Result<RaftAdminClient<Channel>, AdminError> {
        let unreachable = |message: String| AdminError::Unreachable {
            addr: member.addr.to_string(),
            message,
        };
        let endpoint = parsec_transport::endpoint(member.addr, member.tls)
            .map_err(|e| unreachable(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .timeout(timeout);
        let channel = endpoint
            .connect()
            .await
            // A refused TLS handshake tells why only in the error's causes.
            .map_err(|e| unreachable(parsec_core::error_chain(&e)))?;
        Ok(RaftAdminClient::new(channel))
    }
}

fn from_status(addr: &str, status: tonic::Status) -> AdminError {
    match status.code() {
        tonic::Code::FailedPrecondition => {
            if let Some(leader) = status
                .metadata()
                .get("x-raft-leader-addr")
                .and_then(|v| v.to_str().ok())
            {
                return AdminError::NotLeader {
                    addr: addr.to_string(),
                    leader: leader.to_string(),
                };
            }
            AdminError::Refused {
                addr: addr.to_string(),
                message: status.message().to_string(),
            }
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => AdminError::Unreachable {
            addr: addr.to_string(),
            message: status.message().to_string(),
        },
        // The connection failed below gRPC (e.g. the member refused the TLS handshake): the
        // reason is in the error's causes.
        tonic::Code::Unknown => match std::error::Error::source(&status) {
            Some(source) => AdminError::Unreachable {
                addr: addr.to_string(),
                message: parsec_core::error_chain(source),
            },
            None => refused(addr, &status),
        },
        _ => refused(addr, &status),
    }
}

fn refused(addr: &str, status: &tonic::Status) -> AdminError {
    AdminError::Refused {
        addr: addr.to_string(),
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

#[async_trait]
impl RaftAdmin for GrpcRaftAdmin {
    async fn status(&self, member: Target<'_>) -> Result<MemberState, AdminError> {
        let mut client = self.client(member, self.status_timeout).await?;
        let reply = client
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| from_status(member.addr, s))?
            .into_inner();
        Ok(MemberState {
            node_id: reply.node_id,
            role: reply.role,
            leader_id: reply.leader_id,
            term: reply.term,
            voters: reply.voters,
            learners: reply.learners,
            applied_index: reply.applied_index,
        })
    }

    async fn add_learner(
        &self,
        leader: Target<'_>,
        node_id: u64,
        node_addr: &str,
    ) -> Result<(), AdminError> {
        let mut client = self.client(leader, self.membership_timeout).await?;
        client
            .add_learner(pb::AddLearnerRequest {
                node_id,
                addr: node_addr.to_string(),
            })
            .await
            .map_err(|s| from_status(leader.addr, s))?;
        Ok(())
    }

    async fn promote_learner(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError> {
        let mut client = self.client(leader, self.membership_timeout).await?;
        client
            .promote_learner(pb::NodeRequest { node_id })
            .await
            .map_err(|s| from_status(leader.addr, s))?;
        Ok(())
    }

    async fn remove_member(&self, leader: Target<'_>, node_id: u64) -> Result<(), AdminError> {
        let mut client = self.client(leader, self.membership_timeout).await?;
        client
            .remove_member(pb::NodeRequest { node_id })
            .await
            .map_err(|s| from_status(leader.addr, s))?;
        Ok(())
    }
}
