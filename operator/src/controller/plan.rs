//! Pure orchestration: from the spec, the persisted operation and what is observed, decide the
//! size of every StatefulSet and the one disruptive step (if any) to take in this reconcile.
//!
//! Rules:
//! - at most one operation in the whole cluster at a time, persisted in `status.operation`, each
//!   step idempotent so an interrupted operation resumes where it stopped;
//! - groups are visited ticket machine first, then shards in order (servers before clients);
//! - membership changes one member at a time: a new member joins as a learner, catches up, then
//!   becomes a voter; a member leaves Raft before its pod goes;
//! - rolling restarts (StatefulSets use `OnDelete`): not-ready members first, then followers, then
//!   the leader. openraft 0.9 cannot transfer leadership, so the leader of a multi-member group
//!   is removed from Raft first (the others elect a new leader), restarted, and added back;
//! - nothing disruptive starts in a group that lacks a leader or has a member not ready (except
//!   restarting that not-ready member), nor while the cluster is stopped.

use crate::build::{GroupSize, GroupSizes, spec_replicas};
use crate::crd::{Operation, OperationKind, OperationStep, ParsecClusterStatus};
use crate::naming::Group;
use crate::validate::ValidatedCluster;

use super::observe::{Observed, ObservedGroup};

/// What to do to the data plane or a pod in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    AddLearner {
        leader: String,
        node_id: u64,
        addr: String,
    },
    PromoteLearner {
        leader: String,
        node_id: u64,
    },
    RemoveMember {
        leader: String,
        node_id: u64,
    },
    DeletePod {
        pod: String,
    },
}

/// The outcome of planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Members and StatefulSet replicas of each group, to build the objects with.
    pub sizes: GroupSizes,
    /// The operation to persist once `effect` (if any) succeeded. `None` = no operation.
    pub operation: Option<Operation>,
    /// The disruptive step to take now, if any.
    pub effect: Option<Effect>,
    /// Groups whose member count changed with this plan (an operation completed).
    pub members: std::collections::BTreeMap<Group, i32>,
    /// An operation completed in this reconcile.
    pub completed: Option<Operation>,
    /// The operation as it stood before this reconcile: what to persist (with the error as its
    /// message) when `effect` fails, so the step is retried.
    pub retry: Option<Operation>,
    /// `members` before this reconcile, for the same case.
    pub members_before: std::collections::BTreeMap<Group, i32>,
}

/// Members each group had when last reconciled (status), else what its StatefulSet runs, else
/// what the spec asks for (a new group is created at full size and bootstraps with all).
pub fn current_members(
    cluster: &ValidatedCluster,
    status: Option<&ParsecClusterStatus>,
    observed: &Observed,
    group: Group,
) -> i32 {
    let recorded = status.and_then(|s| match group {
        Group::TicketMachine => s.ticket_machine.as_ref(),
        Group::Shard(i) => s.shards.iter().find(|g| g.group == Group::Shard(i).id()),
    });
    if let Some(recorded) = recorded.filter(|r| r.members > 0) {
        return recorded.members;
    }
    match observed.groups.get(&group) {
        Some(g) if g.replicas > 0 => g.replicas,
        _ => spec_replicas(cluster, group),
    }
}

pub fn plan(
    cluster: &ValidatedCluster,
    status: Option<&ParsecClusterStatus>,
    observed: &Observed,
    now: &str,
) -> Plan {
    let stopped = cluster.spec.cluster_operation.stopped;
    let groups = Group::all(cluster.spec.shards.count);
    let members: std::collections::BTreeMap<Group, i32> = groups
        .iter()
        .map(|&g| (g, current_members(cluster, status, observed, g)))
        .collect();
    let mut plan = Plan {
        sizes: members
            .iter()
            .map(|(&g, &m)| {
                let replicas = if stopped { 0 } else { m };
                (
                    g,
                    GroupSize {
                        members: m,
                        replicas,
                    },
                )
            })
            .collect(),
        operation: None,
        effect: None,
        members_before: members.clone(),
        members,
        completed: None,
        retry: None,
    };
    if stopped {
        // Every step is idempotent: an abandoned operation is safely started afresh later.
        return plan;
    }
    let current = status.and_then(|s| s.operation.clone());
    match current {
        Some(op) => {
            plan.retry = Some(op.clone());
            advance(cluster, observed, op, &mut plan);
        }
        None => {
            if let Some(op) = next_operation(cluster, observed, &plan.members, now) {
                // Starting is a step too: take its first effect in the same reconcile.
                plan.retry = Some(op.clone());
                advance(cluster, observed, op, &mut plan);
            }
        }
    }
    plan
}

/// Picks the next operation, if the cluster needs one.
fn next_operation(
    cluster: &ValidatedCluster,
    observed: &Observed,
    members: &std::collections::BTreeMap<Group, i32>,
    now: &str,
) -> Option<Operation> {
    let groups = Group::all(cluster.spec.shards.count);
    let op = |group: Group, kind, node: u64, step| Operation {
        kind,
        group: group.id(),
        node_id: node,
        pod: group.pod(&cluster.name, node),
        step,
        started_at: now.to_string(),
        message: None,
    };
    // First, anywhere: a not-ready member on an old revision. Restarting it cannot make matters
    // worse, and the new template may well be its fix.
    for &group in &groups {
        let Some(live) = observed.groups.get(&group) else {
            continue;
        };
        let current = members.get(&group).copied().unwrap_or(0);
        if let Some(p) = live
            .pods
            .values()
            .find(|p| p.ordinal < current as u64 && !p.ready && !p.terminating && live.outdated(p))
        {
            return Some(op(
                group,
                OperationKind::RestartMember,
                p.ordinal,
                OperationStep::DeletePod,
            ));
        }
    }
    // Then group by group: membership towards the spec, then the rolling restart.
    for &group in &groups {
        let Some(live) = observed.groups.get(&group) else {
            continue;
        };
        let current = members.get(&group).copied().unwrap_or(0);
        if !healthy(live, current) {
            continue;
        }
        let wanted = spec_replicas(cluster, group);
        if current < wanted {
            return Some(op(
                group,
                OperationKind::AddMember,
                current as u64,
                OperationStep::AwaitPod,
            ));
        }
        if current > wanted {
            let node = current as u64 - 1;
            return Some(op(
                group,
                OperationKind::RemoveMember,
                node,
                OperationStep::RemoveFromRaft,
            ));
        }
        let leader = live.leader();
        let outdated: Vec<u64> = live
            .pods
            .values()
            .filter(|p| live.outdated(p) && !p.terminating)
            .map(|p| p.ordinal)
            .collect();
        // Followers first, highest ordinal first (like the StatefulSet controller).
        if let Some(&node) = outdated.iter().rev().find(|&&n| Some(n) != leader) {
            return Some(op(
                group,
                OperationKind::RestartMember,
                node,
                OperationStep::DeletePod,
            ));
        }
        if let Some(&node) = outdated.first() {
            return Some(if current > 1 {
                op(
                    group,
                    OperationKind::RestartLeader,
                    node,
                    OperationStep::RemoveFromRaft,
                )
            } else {
                op(
                    group,
                    OperationKind::RestartMember,
                    node,
                    OperationStep::DeletePod,
                )
            });
        }
    }
    None
}

/// A group is healthy when it has a leader and all its members are ready.
fn healthy(live: &ObservedGroup, members: i32) -> bool {
    live.leader().is_some()
        && (0..members as u64).all(|n| live.pods.get(&n).is_some_and(|p| p.ready && !p.terminating))
}

/// Takes the next step of `op` (or waits), updating `plan`.
fn advance(cluster: &ValidatedCluster, observed: &Observed, mut op: Operation, plan: &mut Plan) {
    let Some(group) = Group::parse(&op.group) else {
        // An operation on a group this cluster does not have (hand-edited status): drop it.
        return;
    };
    let empty = ObservedGroup::default();
    let live = observed.groups.get(&group).unwrap_or(&empty);
    let node = op.node_id;
    let members = plan.members.get(&group).copied().unwrap_or(0);
    let addr = group.address(&cluster.name, &cluster.namespace, node);
    let leader_addr = live
        .leader()
        .map(|l| group.address(&cluster.name, &cluster.namespace, l));
    let pod = live.pods.get(&node);
    // The leader answered, so membership is known (not merely unknown).
    let membership_known = live.leader_state().is_some();

    // While a member is being added its pod exists and is listed; while one is being removed
    // it stays listed until its pod is gone.
    let size = |plan: &mut Plan, members: i32, replicas: i32| {
        plan.sizes.insert(group, GroupSize { members, replicas });
    };

    let waiting = |op: &mut Operation, why: &str| op.message = Some(why.to_string());
    match (op.kind, op.step) {
        (OperationKind::AddMember, OperationStep::AwaitPod) => {
            size(plan, members + 1, members + 1);
            if pod.is_some_and(|p| p.running && !p.terminating) {
                op.step = OperationStep::AddLearner;
                op.message = None;
                step_add_learner(live, &mut op, leader_addr, addr, plan);
                return;
            }
            waiting(&mut op, "waiting for the new pod to run");
        }
        (OperationKind::AddMember, OperationStep::AddLearner)
        | (OperationKind::RestartLeader, OperationStep::AddLearner) => {
            let grow = op.kind == OperationKind::AddMember;
            if grow {
                size(plan, members + 1, members + 1);
            }
            step_add_learner(live, &mut op, leader_addr, addr, plan);
            return;
        }
        (
            kind @ (OperationKind::AddMember | OperationKind::RestartLeader),
            OperationStep::PromoteLearner,
        ) => {
            if kind == OperationKind::AddMember {
                size(plan, members + 1, members + 1);
            }
            if live.is_voter(node) {
                let after = if kind == OperationKind::AddMember {
                    members + 1
                } else {
                    members
                };
                finish(plan, op, group, after);
                return;
            }
            match leader_addr {
                Some(leader) => {
                    plan.effect = Some(Effect::PromoteLearner {
                        leader,
                        node_id: node,
                    });
                    // Promotion is the last step: done once it succeeded.
                    plan.completed = Some(op.clone());
                    if kind == OperationKind::AddMember {
                        plan.members.insert(group, members + 1);
                    }
                    plan.operation = None;
                    return;
                }
                None => waiting(&mut op, "no leader to promote the learner"),
            }
        }
        (OperationKind::RemoveMember, OperationStep::RemoveFromRaft) => {
            if membership_known && !live.is_member(node) {
                op.step = OperationStep::AwaitPodGone;
                op.message = None;
                size(plan, members - 1, members - 1);
                if pod.is_none() {
                    finish(plan, op, group, members - 1);
                    return;
                }
            } else if let Some(leader) = leader_addr {
                plan.effect = Some(Effect::RemoveMember {
                    leader,
                    node_id: node,
                });
                op.step = OperationStep::AwaitPodGone;
                op.message = None;
            } else {
                waiting(&mut op, "no leader to remove the member");
            }
        }
        (OperationKind::RemoveMember, OperationStep::AwaitPodGone) => {
            size(plan, members - 1, members - 1);
            if pod.is_none() {
                op.message = None;
                finish(plan, op, group, members - 1);
                return;
            }
            waiting(&mut op, "waiting for the StatefulSet to remove the pod");
        }
        (OperationKind::RestartLeader, OperationStep::RemoveFromRaft) => {
            // Removing the leader on itself: the others elect a new leader.
            if !membership_known || live.is_member(node) {
                match leader_addr {
                    Some(leader) => {
                        plan.effect = Some(Effect::RemoveMember {
                            leader,
                            node_id: node,
                        });
                        op.step = OperationStep::DeletePod;
                        op.message = None;
                    }
                    None => waiting(&mut op, "no leader to remove the member"),
                }
            } else {
                op.step = OperationStep::DeletePod;
            }
        }
        (kind, OperationStep::DeletePod) => {
            if let Some(p) = pod.filter(|p| !p.terminating && live.outdated(p)) {
                plan.effect = Some(Effect::DeletePod {
                    pod: p.name.clone(),
                });
            }
            op.step = if kind == OperationKind::RestartLeader {
                OperationStep::AwaitPod
            } else {
                OperationStep::AwaitReady
            };
            op.message = None;
        }
        (OperationKind::RestartLeader, OperationStep::AwaitPod) => {
            if pod.is_some_and(|p| p.running && !p.terminating && !live.outdated(p)) {
                op.step = OperationStep::AddLearner;
                op.message = None;
                step_add_learner(live, &mut op, leader_addr, addr, plan);
                return;
            }
            waiting(&mut op, "waiting for the restarted pod to run");
        }
        (_, OperationStep::AwaitReady) => {
            if pod.is_some_and(|p| p.ready && !p.terminating && !live.outdated(p)) {
                finish(plan, op, group, members);
                return;
            }
            waiting(&mut op, "waiting for the restarted member to be ready");
        }
        (_, step) => {
            // A step this kind never takes (hand-edited status): drop the operation.
            tracing::warn!(
                kind = op.kind.as_str(),
                step = step.as_str(),
                "dropping an inconsistent operation"
            );
            return;
        }
    }
    plan.operation = Some(op);
}

fn step_add_learner(
    live: &ObservedGroup,
    op: &mut Operation,
    leader_addr: Option<String>,
    addr: String,
    plan: &mut Plan,
) {
    if live.is_member(op.node_id) {
        op.step = OperationStep::PromoteLearner;
        op.message = None;
    } else if let Some(leader) = leader_addr {
        plan.effect = Some(Effect::AddLearner {
            leader,
            node_id: op.node_id,
            addr,
        });
        op.step = OperationStep::PromoteLearner;
        op.message = None;
    } else {
        op.message = Some("no leader to add the learner".into());
    }
    plan.operation = Some(op.clone());
}

fn finish(plan: &mut Plan, op: Operation, group: Group, members: i32) {
    plan.members.insert(group, members);
    plan.sizes.insert(
        group,
        GroupSize {
            members,
            replicas: members,
        },
    );
    plan.completed = Some(op);
    plan.operation = None;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::admin::MemberState;
    use crate::controller::observe::ObservedPod;
    use crate::crd::RaftGroupStatus;
    use crate::test_support::validated;

    /// A group of `n` ready members on revision `rev`, led by `leader`.
    fn group(n: u64, leader: u64, rev: &str, update: &str) -> ObservedGroup {
        let voters: Vec<u64> = (0..n).collect();
        ObservedGroup {
            replicas: n as i32,
            update_revision: Some(update.into()),
            pods: (0..n)
                .map(|o| {
                    (
                        o,
                        ObservedPod {
                            name: format!("demo-shard-0-{o}"),
                            ordinal: o,
                            running: true,
                            ready: true,
                            revision: Some(rev.into()),
                            terminating: false,
                        },
                    )
                })
                .collect(),
            members: (0..n)
                .map(|o| {
                    (
                        o,
                        MemberState {
                            node_id: o,
                            role: if o == leader { "leader" } else { "follower" }.into(),
                            leader_id: Some(leader),
                            term: 3,
                            voters: voters.clone(),
                            learners: vec![],
                            applied_index: Some(1),
                        },
                    )
                })
                .collect(),
            volume_size: None,
            mounts_tls: false,
        }
    }

    fn observed(shard: ObservedGroup) -> Observed {
        let mut o = Observed::default();
        o.groups.insert(Group::TicketMachine, group(1, 0, "a", "a"));
        o.groups.insert(Group::Shard(0), shard);
        o
    }

    fn status(members: i32, op: Option<Operation>) -> ParsecClusterStatus {
        ParsecClusterStatus {
            ticket_machine: Some(RaftGroupStatus {
                group: "ticket-machine".into(),
                members: 1,
                ..Default::default()
            }),
            shards: vec![RaftGroupStatus {
                group: "shard-0".into(),
                members,
                ..Default::default()
            }],
            operation: op,
            ..Default::default()
        }
    }

    #[test]
    fn a_steady_cluster_needs_nothing() {
        let c = validated("shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}");
        let p = plan(
            &c,
            Some(&status(3, None)),
            &observed(group(3, 0, "a", "a")),
            "t",
        );
        assert_eq!(p.effect, None);
        assert_eq!(p.operation, None);
        assert_eq!(
            p.sizes[&Group::Shard(0)],
            GroupSize {
                members: 3,
                replicas: 3
            }
        );
    }

    #[test]
    fn growing_starts_by_adding_one_pod_and_waits_for_it() {
        let c = validated("shards: {count: 1, replicas: 5}\nticketMachine: {replicas: 1}");
        let p = plan(
            &c,
            Some(&status(3, None)),
            &observed(group(3, 0, "a", "a")),
            "t",
        );
        let op = p.operation.unwrap();
        assert_eq!(
            (op.kind, op.step, op.node_id),
            (OperationKind::AddMember, OperationStep::AwaitPod, 3)
        );
        assert_eq!(
            p.sizes[&Group::Shard(0)],
            GroupSize {
                members: 4,
                replicas: 4
            }
        );
        assert_eq!(p.effect, None, "nothing to ask Raft before the pod runs");
    }

    #[test]
    fn an_unhealthy_group_is_not_resized() {
        let c = validated("shards: {count: 1, replicas: 5}\nticketMachine: {replicas: 1}");
        let mut shard = group(3, 0, "a", "a");
        shard.pods.get_mut(&2).unwrap().ready = false;
        let p = plan(&c, Some(&status(3, None)), &observed(shard), "t");
        assert_eq!(p.operation, None);
    }

    #[test]
    fn a_failed_membership_step_is_retried_from_the_same_step() {
        let c = validated("shards: {count: 1, replicas: 5}\nticketMachine: {replicas: 1}");
        let op = Operation {
            kind: OperationKind::AddMember,
            group: "shard-0".into(),
            node_id: 3,
            pod: "demo-shard-0-3".into(),
            step: OperationStep::AddLearner,
            started_at: "t".into(),
            message: None,
        };
        let mut shard = group(3, 0, "a", "a");
        shard.pods.insert(
            3,
            ObservedPod {
                name: "demo-shard-0-3".into(),
                ordinal: 3,
                running: true,
                ..Default::default()
            },
        );
        let p = plan(
            &c,
            Some(&status(3, Some(op.clone()))),
            &observed(shard),
            "t",
        );
        assert_eq!(
            p.effect,
            Some(Effect::AddLearner {
                leader: "demo-shard-0-0.demo-shard-0.ns.svc:7100".into(),
                node_id: 3,
                addr: "demo-shard-0-3.demo-shard-0.ns.svc:7100".into()
            })
        );
        assert_eq!(p.operation.unwrap().step, OperationStep::PromoteLearner);
        assert_eq!(
            p.retry,
            Some(op),
            "on failure the same step is persisted again"
        );
    }

    #[test]
    fn the_leader_restarts_last_and_leaves_raft_first() {
        let c = validated("shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}");
        let mut shard = group(3, 1, "a", "b");
        // Followers 0 and 2 already restarted.
        shard.pods.get_mut(&0).unwrap().revision = Some("b".into());
        shard.pods.get_mut(&2).unwrap().revision = Some("b".into());
        let p = plan(&c, Some(&status(3, None)), &observed(shard), "t");
        let op = p.operation.unwrap();
        assert_eq!(op.kind, OperationKind::RestartLeader);
        assert_eq!(op.node_id, 1);
        assert_eq!(
            p.effect,
            Some(Effect::RemoveMember {
                leader: "demo-shard-0-1.demo-shard-0.ns.svc:7100".into(),
                node_id: 1
            })
        );
    }

    #[test]
    fn stopping_runs_nothing_and_keeps_members() {
        let c = validated(
            "shards: {count: 1, replicas: 3}\nticketMachine: {replicas: 1}\nclusterOperation: {stopped: true}",
        );
        let p = plan(
            &c,
            Some(&status(3, None)),
            &observed(group(3, 0, "a", "b")),
            "t",
        );
        assert_eq!(
            p.sizes[&Group::Shard(0)],
            GroupSize {
                members: 3,
                replicas: 0
            }
        );
        assert_eq!(p.effect, None);
    }
}
