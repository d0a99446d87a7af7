//! `ParsecCluster.status`: what the operator observed and what it is doing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParsecClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Available, Progressing, Degraded, ReconciliationPaused, Stopped, SpecRejected; each with
    /// its own observedGeneration, so `kubectl wait --for=condition=Available` can be trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_machine: Option<RaftGroupStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<RaftGroupStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentsStatus>,
    /// The one disruptive operation in flight; an interrupted operation resumes from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The image every member and agent runs once no rollout is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One Raft group (a shard or the ticket machine).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftGroupStatus {
    /// `ticket-machine` or `shard-N`.
    pub group: String,
    pub stateful_set: String,
    /// Voting members the operator maintains; it moves towards `spec.*.replicas` one member at a
    /// time.
    pub members: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pod name of the leader, when one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<MemberStatus>,
    /// Pods not yet on the StatefulSet's update revision.
    #[serde(default)]
    pub outdated_pods: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub pod: String,
    pub node_id: u64,
    /// leader, follower, candidate, learner, shutdown or unknown (unreachable).
    pub role: String,
    pub ready: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsStatus {
    /// Current agent pods (the scale subresource's status replicas).
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// What the HorizontalPodAutoscaler asks for, when autoscaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// Label selector of the agent pods (for the scale subresource).
    pub selector: String,
    /// In-cluster JSON-RPC URL.
    pub json_rpc_endpoint: String,
}

/// A disruptive step sequence on one member of one Raft group. Exactly one exists at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    pub kind: OperationKind,
    /// `ticket-machine` or `shard-N`.
    pub group: String,
    pub node_id: u64,
    pub pod: String,
    pub step: OperationStep,
    /// RFC 3339.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationKind {
    /// Grow a group by one member: StatefulSet +1, learner, promotion.
    AddMember,
    /// Shrink a group by one member: removal from Raft, then StatefulSet -1.
    RemoveMember,
    /// Restart a member on the new pod template (rolling upgrade).
    RestartMember,
    /// Restart the leader: it is removed from the group first (openraft 0.9 cannot transfer
    /// leadership; the others elect a new leader), restarted, then added back.
    RestartLeader,
}

impl OperationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::AddMember => "AddMember",
            OperationKind::RemoveMember => "RemoveMember",
            OperationKind::RestartMember => "RestartMember",
            OperationKind::RestartLeader => "RestartLeader",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OperationStep {
    /// Wait for the StatefulSet to run the new pod.
    AwaitPod,
    /// Ask the leader to add the pod as a learner (blocks until it caught up).
    AddLearner,
    /// Ask the leader to make the learner a voter.
    PromoteLearner,
    /// Ask the leader to remove the member.
    RemoveFromRaft,
    /// Wait for the StatefulSet to drop the pod.
    AwaitPodGone,
    /// Delete the pod; the StatefulSet recreates it from the update revision.
    DeletePod,
    /// Wait for the recreated pod to be ready (Raft member with a leader, caught up).
    AwaitReady,
}

impl OperationStep {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStep::AwaitPod => "AwaitPod",
            OperationStep::AddLearner => "AddLearner",
            OperationStep::PromoteLearner => "PromoteLearner",
            OperationStep::RemoveFromRaft => "RemoveFromRaft",
            OperationStep::AwaitPodGone => "AwaitPodGone",
            OperationStep::DeletePod => "DeletePod",
            OperationStep::AwaitReady => "AwaitReady",
        }
    }
}
