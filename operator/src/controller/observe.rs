//! Reads the live state of a cluster: its StatefulSets, pods, agent Deployment and HPA from the
//! API server, and each Raft member's view from the admin API.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use parsec_transport::Tls;

use super::Error;
use crate::admin::{MemberState, RaftAdmin, Target};
use crate::naming::{
    FIELD_MANAGER, Group, LABEL_GROUP, LABEL_REVISION, agent_deployment, instance_selector,
    ordinal_of,
};
use crate::validate::ValidatedCluster;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub groups: BTreeMap<Group, ObservedGroup>,
    pub deployment: Option<ObservedDeployment>,
    /// What the HPA currently wants, when one exists.
    pub hpa_desired: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedGroup {
    /// `spec.replicas` of the live StatefulSet.
    pub replicas: i32,
    pub update_revision: Option<String>,
    /// Pods by ordinal.
    pub pods: BTreeMap<u64, ObservedPod>,
    /// Each reachable member's own view, by ordinal (= node id).
    pub members: BTreeMap<u64, MemberState>,
    /// Storage request of the live volume claim template.
    pub volume_size: Option<String>,
    /// The live pod template mounts a TLS Secret: its members speak mutual TLS.
    pub mounts_tls: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedPod {
    pub name: String,
    pub ordinal: u64,
    /// Its container is running (the process serves, maybe not yet as a member).
    pub running: bool,
    /// The pod's Ready condition (a Raft member that knows its leader and caught up).
    pub ready: bool,
    pub revision: Option<String>,
    /// Being deleted.
    pub terminating: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedDeployment {
    pub replicas: Option<i32>,
    pub ready_replicas: i32,
    /// Our field manager owns `spec.replicas` (so dropping it from our apply would reset it).
    pub replicas_owned_by_operator: bool,
}

impl ObservedGroup {
    /// The leader by the freshest view: the leader id reported with the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.members
            .values()
            .filter(|m| m.leader_id.is_some())
            .max_by_key(|m| m.term)
            .and_then(|m| m.leader_id)
    }

    pub fn term(&self) -> Option<u64> {
        self.members.values().map(|m| m.term).max()
    }

    /// The leader's view of the membership, when the leader answered.
    pub fn leader_state(&self) -> Option<&MemberState> {
        self.members.get(&self.leader()?)
    }

    pub fn is_voter(&self, node: u64) -> bool {
        self.leader_state()
            .is_some_and(|s| s.voters.contains(&node))
    }

    pub fn is_member(&self, node: u64) -> bool {
        self.leader_state()
            .is_some_and(|s| s.voters.contains(&node) || s.learners.contains(&node))
    }

    pub fn outdated(&self, pod: &ObservedPod) -> bool {
        match (&self.update_revision, &pod.revision) {
            (Some(update), Some(revision)) => update != revision,
            _ => false,
        }
    }
}

fn pod_state(pod: &Pod) -> Option<ObservedPod> {
    let name = pod.name_any();
    let ordinal = ordinal_of(&name)?;
    let status = pod.status.as_ref();
    let running = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs
                    .iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        });
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(ObservedPod {
        ordinal,
        running,
        ready,
        revision: pod.labels().get(LABEL_REVISION).cloned(),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        name,
    })
}

/// Whether `manager`'s Apply entry in `managedFields` covers `spec.replicas`.
pub fn owns_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(manager) && m.operation.as_deref() == Some("Apply")
        })
        .any(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
        })
}

/// How this reconcile may call the members' admin API.
#[derive(Clone, Copy)]
pub enum AdminAccess<'a> {
    /// Plain gRPC, or mutual TLS with the cluster's certificate.
    Call(&'a dyn RaftAdmin, Option<&'a Tls>),
    /// The cluster requires mutual TLS but its certificate is not usable: members would refuse
    /// (and log) every call, so none is made and their views stay unknown.
    None,
}

/// Reads the cluster's live objects and asks every running member for its Raft view.
pub async fn observe(
    client: &Client,
    access: AdminAccess<'_>,
    cluster: &ValidatedCluster,
) -> Result<Observed, Error> {
    let ns = &cluster.namespace;
    let selector = ListParams::default().labels(&instance_selector(&cluster.name));
    let kube_err = |action, kind| {
        move |source| Error::Kube {
            action,
            kind,
            name: cluster.name.clone(),
            source,
        }
    };

    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&selector)
        .await
        .map_err(kube_err("list", "StatefulSet"))?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&selector)
        .await
        .map_err(kube_err("list", "Pod"))?;

    let mut observed = Observed::default();
    for group in Group::all(cluster.spec.shards.count) {
        let name = group.stateful_set(&cluster.name);
        let Some(sts) = stateful_sets.items.iter().find(|s| s.name_any() == name) else {
            continue;
        };
        let mut state = ObservedGroup {
            replicas: sts.spec.replicas.unwrap_or(0),
            update_revision: sts.status.as_ref().and_then(|s| s.update_revision.clone()),
            volume_size: sts
                .spec
                .volume_claim_templates
                .as_ref()
                .and_then(|t| t.first())
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            mounts_tls: sts
                .spec
                .template
                .spec
                .iter()
                .flat_map(|pod| pod.volumes.iter().flatten())
                .filter_map(|volume| volume.projected.as_ref())
                .flat_map(|projected| projected.sources.iter().flatten())
                .any(|source| source.secret.is_some()),
            ..ObservedGroup::default()
        };
        for pod in pods
            .items
            .iter()
            .filter(|p| p.labels().get(LABEL_GROUP) == Some(&group.id()))
            .filter_map(pod_state)
        {
            if let AdminAccess::Call(admin, tls) = access
                && pod.running
                && !pod.terminating
            {
                let addr = group.address(&cluster.name, ns, pod.ordinal);
                match admin.status(Target { addr: &addr, tls }).await {
                    Ok(member) => {
                        state.members.insert(pod.ordinal, member);
                    }
                    Err(error) => {
                        tracing::debug!(%error, pod = %pod.name, "raft member did not answer")
                    }
                }
            }
            state.pods.insert(pod.ordinal, pod);
        }
        observed.groups.insert(group, state);
    }

    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&agent_deployment(&cluster.name))
        .await
        .map_err(kube_err("get", "Deployment"))?;
    observed.deployment = deployment.map(|d| ObservedDeployment {
        replicas: d.spec.replicas,
        ready_replicas: d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
        replicas_owned_by_operator: owns_replicas(&d, FIELD_MANAGER),
    });
    if cluster.spec.agents.autoscaling.is_some() {
        let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
            .get_opt(&agent_deployment(&cluster.name))
            .await
            .map_err(kube_err("get", "HorizontalPodAutoscaler"))?;
        observed.hpa_desired = hpa.and_then(|h| h.status).map(|s| s.desired_replicas);
    }
    Ok(observed)
}
