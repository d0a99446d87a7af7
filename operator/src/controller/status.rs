//! Pure status: conditions (each with observedGeneration, transition times kept while the
//! status does not change), per-group members and leader, agents, the operation in flight.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::build::deployment::applied_replicas;
use crate::crd::{AgentsStatus, MemberStatus, Operation, ParsecClusterStatus, RaftGroupStatus};
use crate::naming::{Group, agent_selector, json_rpc_endpoint, selector_string};
use crate::validate::ValidatedCluster;

use super::observe::Observed;
use super::tls::TlsState;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const PAUSED: &str = "ReconciliationPaused";
pub const STOPPED: &str = "Stopped";
/// Present when `spec.tls` is set: whether the certificate is there and usable.
pub const TLS_READY: &str = "TLSReady";

/// A condition before timestamps: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

fn cond(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Cond {
    Cond {
        type_,
        status,
        reason: reason.into(),
        message: message.into(),
    }
}

/// Turns `conds` into API conditions, keeping each one's last transition time when its status
/// did not change.
pub fn merge_conditions(
    old: &[Condition],
    conds: &[Cond],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let previous = old.iter().find(|o| o.type_ == c.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: c.type_.into(),
                status: status.into(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Group statuses from what was observed.
pub fn group_status(
    cluster: &ValidatedCluster,
    observed: &Observed,
    members: &BTreeMap<Group, i32>,
    group: Group,
) -> RaftGroupStatus {
    let live = observed.groups.get(&group);
    let leader = live.and_then(|g| g.leader());
    RaftGroupStatus {
        group: group.id(),
        stateful_set: group.stateful_set(&cluster.name),
        members: members.get(&group).copied().unwrap_or(0),
        ready_replicas: live.map_or(0, |g| g.pods.values().filter(|p| p.ready).count() as i32),
        leader: leader.map(|l| group.pod(&cluster.name, l)),
        term: live.and_then(|g| g.term()),
        pods: live
            .map(|g| {
                g.pods
                    .values()
                    .map(|p| MemberStatus {
                        pod: p.name.clone(),
                        node_id: p.ordinal,
                        role: g
                            .members
                            .get(&p.ordinal)
                            .map_or_else(|| "unknown".to_string(), |m| m.role.clone()),
                        ready: p.ready,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        outdated_pods: live.map_or(0, |g| {
            g.pods.values().filter(|p| g.outdated(p)).count() as i32
        }),
    }
}

/// What `compute` needs besides the observation.
pub struct StatusInput<'a> {
    pub cluster: &'a ValidatedCluster,
    pub observed: &'a Observed,
    pub members: &'a BTreeMap<Group, i32>,
    pub operation: Option<&'a Operation>,
    pub old: Option<&'a ParsecClusterStatus>,
    pub paused: bool,
    pub tls: &'a TlsState,
    pub now: Timestamp,
}

pub fn compute(input: StatusInput<'_>) -> ParsecClusterStatus {
    let StatusInput {
        cluster,
        observed,
        members,
        operation,
        old,
        paused,
        tls,
        now,
    } = input;
    let tls_problem = match tls {
        TlsState::Waiting(problem) => Some(problem),
        _ => None,
    };
    let groups: Vec<RaftGroupStatus> = Group::all(cluster.spec.shards.count)
        .into_iter()
        .map(|g| group_status(cluster, observed, members, g))
        .collect();
    let stopped = cluster.spec.cluster_operation.stopped;
    let agent_ready = observed.deployment.as_ref().map_or(0, |d| d.ready_replicas);
    let agent_replicas = observed
        .deployment
        .as_ref()
        .and_then(|d| d.replicas)
        .unwrap_or(0);
    let agents_wanted = observed
        .hpa_desired
        .or_else(|| applied_replicas(cluster))
        .unwrap_or(agent_replicas);
    let agents = AgentsStatus {
        replicas: agent_replicas,
        ready_replicas: agent_ready,
        desired_replicas: observed.hpa_desired,
        selector: selector_string(&agent_selector(&cluster.name)),
        json_rpc_endpoint: json_rpc_endpoint(&cluster.name, &cluster.namespace),
    };

    let without_leader: Vec<&str> = groups
        .iter()
        .filter(|g| g.leader.is_none())
        .map(|g| g.group.as_str())
        .collect();
    // Groups whose StatefulSet did not exist yet when this reconcile looked: being created.
    let creating: Vec<&str> = groups
        .iter()
        .filter(|g| Group::parse(&g.group).is_some_and(|id| !observed.groups.contains_key(&id)))
        .map(|g| g.group.as_str())
        .collect();
    let short: Vec<&str> = groups
        .iter()
        .filter(|g| g.ready_replicas < g.members && !creating.contains(&g.group.as_str()))
        .map(|g| g.group.as_str())
        .collect();
    let outdated: i32 = groups.iter().map(|g| g.outdated_pods).sum();
    let resizing: Vec<&str> = groups
        .iter()
        .filter(|g| {
            let wanted = match Group::parse(&g.group) {
                Some(Group::TicketMachine) => cluster.spec.ticket_machine.replicas,
                _ => cluster.spec.shards.replicas,
            };
            g.members != wanted
        })
        .map(|g| g.group.as_str())
        .collect();

    let available = if stopped {
        cond(AVAILABLE, false, "Stopped", "the cluster is stopped")
    } else if let Some(problem) = tls_problem {
        // Without a usable certificate the operator cannot ask the members anything.
        cond(
            AVAILABLE,
            false,
            "TLSNotReady",
            format!("unknown: the members' admin API needs the cluster's certificate ({problem})"),
        )
    } else if !without_leader.is_empty() {
        cond(
            AVAILABLE,
            false,
            "NoLeader",
            format!("no leader in {}", without_leader.join(", ")),
        )
    } else if agent_ready == 0 {
        cond(AVAILABLE, false, "NoAgentReady", "no agent is ready")
    } else {
        cond(
            AVAILABLE,
            true,
            "Quorate",
            format!(
                "every Raft group has a leader; {agent_ready} agent(s) ready at {}",
                agents.json_rpc_endpoint
            ),
        )
    };
    let progressing = if paused {
        cond(
            PROGRESSING,
            false,
            "ReconciliationPaused",
            "reconciliation is paused",
        )
    } else if let Some(problem) = tls_problem {
        // Nothing moves until the certificate is usable; waiting for cert-manager is progress,
        // a problem only the user can fix is not.
        cond(
            PROGRESSING,
            !problem.needs_user(),
            problem.reason(),
            problem.to_string(),
        )
    } else if let Some(op) = operation {
        cond(
            PROGRESSING,
            true,
            op.kind.as_str(),
            format!(
                "{} {} ({}): {}{}",
                op.kind.as_str(),
                op.pod,
                op.group,
                op.step.as_str(),
                op.message
                    .as_ref()
                    .map(|m| format!(", {m}"))
                    .unwrap_or_default()
            ),
        )
    } else if !stopped && !creating.is_empty() {
        cond(
            PROGRESSING,
            true,
            "Creating",
            format!("creating {}", creating.join(", ")),
        )
    } else if !stopped && !resizing.is_empty() {
        cond(
            PROGRESSING,
            true,
            "Resizing",
            format!("changing members of {}", resizing.join(", ")),
        )
    } else if !stopped && !short.is_empty() {
        cond(
            PROGRESSING,
            true,
            "WaitingForMembers",
            format!("waiting for members of {} to be ready", short.join(", ")),
        )
    } else if !stopped && outdated > 0 {
        cond(
            PROGRESSING,
            true,
            "RollingUpdate",
            format!("{outdated} member(s) to restart on the new template"),
        )
    } else if !stopped && agent_ready < agents_wanted {
        cond(
            PROGRESSING,
            true,
            "ScalingAgents",
            format!("{agent_ready} of {agents_wanted} agents ready"),
        )
    } else {
        cond(
            PROGRESSING,
            false,
            "Reconciled",
            "the cluster runs its spec",
        )
    };
    let degraded = if stopped {
        cond(DEGRADED, false, "Stopped", "the cluster is stopped")
    } else if let Some(problem) = tls_problem.filter(|p| p.needs_user()) {
        cond(DEGRADED, true, problem.reason(), problem.to_string())
    } else if !short.is_empty() {
        cond(
            DEGRADED,
            true,
            "MembersNotReady",
            format!("members not ready in {}", short.join(", ")),
        )
    } else if agent_ready == 0 && agents_wanted > 0 && observed.deployment.is_some() {
        cond(DEGRADED, true, "NoAgentReady", "no agent is ready")
    } else {
        cond(
            DEGRADED,
            false,
            "Healthy",
            "every member and agent is ready",
        )
    };
    let tls_ready = cluster.spec.tls.as_ref().map(|_| match tls {
        TlsState::Ready(material) => cond(
            TLS_READY,
            true,
            "SecretReady",
            format!(
                "every component presents the certificate of Secret {}",
                material.secret
            ),
        ),
        TlsState::Waiting(problem) => cond(TLS_READY, false, problem.reason(), problem.to_string()),
        TlsState::Off => cond(TLS_READY, false, "NotRead", "the Secret was not read"),
    });
    let conds: Vec<Cond> = [
        available,
        progressing,
        degraded,
        if paused {
            cond(
                PAUSED,
                true,
                "Paused",
                "clusterOperation.reconciliationPaused is set: nothing is applied",
            )
        } else {
            cond(PAUSED, false, "Reconciling", "")
        },
        if stopped {
            cond(
                STOPPED,
                true,
                "Stopped",
                "clusterOperation.stopped is set: workloads run 0 replicas, volumes are kept",
            )
        } else {
            cond(STOPPED, false, "Running", "")
        },
    ]
    .into_iter()
    .chain(tls_ready)
    .collect();
    let old_conditions = old.map(|o| o.conditions.as_slice()).unwrap_or(&[]);
    let mut groups = groups.into_iter();
    let ticket_machine = groups.next();
    ParsecClusterStatus {
        observed_generation: cluster.generation,
        conditions: merge_conditions(old_conditions, &conds, cluster.generation, now),
        ticket_machine,
        shards: groups.collect(),
        agents: Some(agents),
        operation: operation.cloned(),
        image: if outdated == 0 && !stopped {
            Some(cluster.image())
        } else {
            old.and_then(|o| o.image.clone())
        },
    }
}

/// Status of a cluster whose spec was rejected: the old status with Degraded set.
pub fn rejected(
    old: Option<&ParsecClusterStatus>,
    generation: Option<i64>,
    reason: &str,
    now: Timestamp,
) -> ParsecClusterStatus {
    let mut status = old.cloned().unwrap_or_default();
    let mut conds: Vec<Cond> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != DEGRADED)
        .filter_map(|c| {
            let type_ = [AVAILABLE, PROGRESSING, PAUSED, STOPPED, TLS_READY]
                .into_iter()
                .find(|t| *t == c.type_)?;
            Some(cond(
                type_,
                c.status == "True",
                &c.reason,
                c.message.clone(),
            ))
        })
        .collect();
    conds.push(cond(DEGRADED, true, "SpecRejected", reason));
    status.conditions = merge_conditions(&status.conditions, &conds, generation, now);
    status.observed_generation = generation;
    status
}
