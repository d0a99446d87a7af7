//! Pure builders: every object a cluster needs, as a function of the validated spec and the size
//! each Raft group has right now. One file per kind or role; no I/O anywhere below here.

pub mod certificate;
pub mod config_map;
pub mod deployment;
pub mod hpa;
pub mod monitoring;
pub mod network_policy;
pub mod pdb;
pub mod pod;
pub mod service;
pub mod stateful_set;
pub mod topology;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use thiserror::Error;

use crate::naming::Group;
use crate::validate::ValidatedCluster;

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("the rendered topology is invalid: {0}")]
    Topology(#[source] parsec_core::ConfigError),
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the embedded alert rules (manifests/monitoring/parsec-rules.yaml) are invalid: {0}")]
    Rules(#[source] serde_yaml::Error),
}

/// How big one Raft group's StatefulSet is right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupSize {
    /// Members listed in the topology: node ids `0..members`. A member being added is listed
    /// before it joins, so that its pod finds itself.
    pub members: i32,
    /// StatefulSet replicas (0 while the cluster is stopped).
    pub replicas: i32,
}

pub type GroupSizes = BTreeMap<Group, GroupSize>;

/// The sizes of a cluster that runs what its spec asks for (first creation).
pub fn spec_sizes(cluster: &ValidatedCluster) -> GroupSizes {
    let stopped = cluster.spec.cluster_operation.stopped;
    Group::all(cluster.spec.shards.count)
        .into_iter()
        .map(|group| {
            let members = spec_replicas(cluster, group);
            let replicas = if stopped { 0 } else { members };
            (group, GroupSize { members, replicas })
        })
        .collect()
}

/// The member count the spec asks of `group`.
pub fn spec_replicas(cluster: &ValidatedCluster, group: Group) -> i32 {
    match group {
        Group::TicketMachine => cluster.spec.ticket_machine.replicas,
        Group::Shard(_) => cluster.spec.shards.replicas,
    }
}

/// Which optional APIs (CRDs of other projects) the API server serves, found by discovery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OptionalApis {
    /// monitoring.coreos.com/v1 ServiceMonitor (Prometheus Operator).
    pub service_monitor: bool,
    /// monitoring.coreos.com/v1 PrometheusRule (Prometheus Operator).
    pub prometheus_rule: bool,
    /// cert-manager.io/v1 Certificate.
    pub certificate: bool,
}

impl OptionalApis {
    /// Every optional API (what `render --with-…` and the golden files assume).
    pub fn all() -> Self {
        OptionalApis {
            service_monitor: true,
            prometheus_rule: true,
            certificate: true,
        }
    }
}

/// What the builders need besides the spec: the API server's optional APIs and where the
/// operator runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    pub apis: OptionalApis,
    /// The operator's namespace (its pods call every Raft member's admin API), when known.
    pub operator_namespace: Option<String>,
}

/// Every object of a cluster, in apply order.
#[derive(Clone, Debug, Default)]
pub struct Desired {
    pub config_maps: Vec<ConfigMap>,
    pub services: Vec<Service>,
    pub stateful_sets: Vec<StatefulSet>,
    pub deployment: Option<Deployment>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdbs: Vec<PodDisruptionBudget>,
    /// ServiceMonitor and PrometheusRule (CRDs of the Prometheus Operator).
    pub monitoring: Vec<DynamicObject>,
    /// cert-manager's Certificate, applied first: the pods wait for its Secret.
    pub certificate: Option<DynamicObject>,
    pub network_policies: Vec<NetworkPolicy>,
}

/// Volume size in the volume claim template of each live StatefulSet. The template is immutable
/// once created, so the desired object repeats it; growth is applied to the claims themselves
/// (see `controller::volumes`).
pub type LiveVolumeSizes = BTreeMap<Group, String>;

/// Builds every object of `cluster` for the given group sizes. `tls_hash` is the hash of the TLS
/// Secret's content when the operator has read it (pod templates carry it, so a new certificate
/// rolls the pods).
pub fn build(
    cluster: &ValidatedCluster,
    sizes: &GroupSizes,
    volumes: &LiveVolumeSizes,
    env: &Environment,
    tls_hash: Option<&str>,
) -> Result<Desired, BuildError> {
    let apis = env.apis;
    let topology = topology::cluster_config(cluster, sizes)?;
    let topology_map = config_map::topology(cluster, &topology)?;
    let hashes = topology::ConfigHashes::of(cluster, &topology)?;
    let groups = Group::all(cluster.spec.shards.count);

    let mut desired = Desired::default();
    desired.config_maps.push(topology_map);
    if cluster.spec.monitoring.grafana_dashboards.enabled {
        desired.config_maps.push(config_map::dashboards(cluster));
    }
    for &group in &groups {
        desired.services.push(service::headless(cluster, group));
    }
    desired.services.push(service::agents(cluster));
    for &group in &groups {
        let size = sizes.get(&group).copied().unwrap_or(GroupSize {
            members: spec_replicas(cluster, group),
            replicas: 0,
        });
        desired.stateful_sets.push(stateful_set::raft_group(
            cluster,
            group,
            size,
            &hashes.raft,
            tls_hash,
            volumes.get(&group).map(String::as_str),
        ));
        if let Some(pdb) = pdb::raft_group(cluster, group, size.members) {
            desired.pdbs.push(pdb);
        }
    }
    desired.deployment = Some(deployment::agents(cluster, &hashes.agents, tls_hash));
    desired.hpa = hpa::agents(cluster);
    desired.pdbs.push(pdb::agents(cluster));
    if cluster.spec.monitoring.service_monitor.enabled && apis.service_monitor {
        desired
            .monitoring
            .push(monitoring::service_monitor(cluster)?);
    }
    if cluster.spec.monitoring.prometheus_rule.enabled && apis.prometheus_rule {
        desired
            .monitoring
            .push(monitoring::prometheus_rule(cluster)?);
    }
    if apis.certificate {
        desired.certificate = certificate::certificate(cluster);
    }
    desired.network_policies =
        network_policy::network_policies(cluster, env.operator_namespace.as_deref());
    Ok(desired)
}

impl Desired {
    /// Every object as a JSON value, in apply order (for golden files and `render`).
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, BuildError> {
        fn push<T: serde::Serialize>(
            out: &mut Vec<serde_json::Value>,
            what: &'static str,
            object: &T,
        ) -> Result<(), BuildError> {
            out.push(
                serde_json::to_value(object)
                    .map_err(|source| BuildError::Serialize { what, source })?,
            );
            Ok(())
        }
        let mut out = Vec::new();
        if let Some(o) = &self.certificate {
            push(&mut out, "Certificate", o)?;
        }
        for o in &self.network_policies {
            push(&mut out, "NetworkPolicy", o)?;
        }
        for o in &self.config_maps {
            push(&mut out, "ConfigMap", o)?;
        }
        for o in &self.services {
            push(&mut out, "Service", o)?;
        }
        for o in &self.stateful_sets {
            push(&mut out, "StatefulSet", o)?;
        }
        if let Some(o) = &self.deployment {
            push(&mut out, "Deployment", o)?;
        }
        if let Some(o) = &self.hpa {
            push(&mut out, "HorizontalPodAutoscaler", o)?;
        }
        for o in &self.pdbs {
            push(&mut out, "PodDisruptionBudget", o)?;
        }
        for o in &self.monitoring {
            push(&mut out, "monitoring object", o)?;
        }
        Ok(out)
    }
}
