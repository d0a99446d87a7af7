//! PodDisruptionBudgets. A Raft group of N members survives ⌊(N-1)/2⌋ failures; voluntary
//! disruptions (drains) may take one member at a time, and only while every other member is
//! healthy. A single-member group gets none: it would block every drain forever, and evicting it
//! costs the same as losing it.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::naming::{Group, agent_labels, agent_pdb, agent_selector, group_labels, group_selector};
use crate::validate::ValidatedCluster;

pub fn raft_group(
    cluster: &ValidatedCluster,
    group: Group,
    members: i32,
) -> Option<PodDisruptionBudget> {
    if members < 3 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: cluster.child_meta(
            group.stateful_set(&cluster.name),
            group_labels(&cluster.name, group),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(group_selector(&cluster.name, group)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

pub fn agents(cluster: &ValidatedCluster) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: cluster.child_meta(agent_pdb(&cluster.name), agent_labels(&cluster.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::String("25%".into())),
            selector: Some(LabelSelector {
                match_labels: Some(agent_selector(&cluster.name)),
                ..LabelSelector::default()
            }),
            // Agents hold no state: an unhealthy one may always go.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
