//! ConfigMaps: the topology every process reads, and Grafana dashboards.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use parsec_core::ClusterConfig;

use super::BuildError;
use super::topology::to_yaml;
use crate::naming::{TOPOLOGY_FILE, dashboard_config_map, instance_labels, topology_config_map};
use crate::validate::ValidatedCluster;

/// The Grafana dashboards (file name, JSON), the one copy kept in `manifests/monitoring/`.
pub const DASHBOARDS: [(&str, &str); 4] = [
    (
        "parsec-overview.json",
        include_str!("../../../manifests/monitoring/parsec-overview.json"),
    ),
    (
        "parsec-shards-raft.json",
        include_str!("../../../manifests/monitoring/parsec-shards-raft.json"),
    ),
    (
        "parsec-agents.json",
        include_str!("../../../manifests/monitoring/parsec-agents.json"),
    ),
    (
        "parsec-operator.json",
        include_str!("../../../manifests/monitoring/parsec-operator.json"),
    ),
];

pub fn topology(
    cluster: &ValidatedCluster,
    config: &ClusterConfig,
) -> Result<ConfigMap, BuildError> {
    Ok(ConfigMap {
        metadata: cluster.child_meta(
            topology_config_map(&cluster.name),
            instance_labels(&cluster.name),
        ),
        data: Some(BTreeMap::from([(
            TOPOLOGY_FILE.to_string(),
            to_yaml(config)?,
        )])),
        ..ConfigMap::default()
    })
}

/// Dashboards for the Grafana sidecar (it loads ConfigMaps carrying its label, by default
/// `grafana_dashboard: "1"`).
pub fn dashboards(cluster: &ValidatedCluster) -> ConfigMap {
    let mut labels = instance_labels(&cluster.name);
    let extra = &cluster.spec.monitoring.grafana_dashboards.labels;
    if extra.is_empty() {
        labels.insert("grafana_dashboard".into(), "1".into());
    } else {
        labels.extend(extra.clone());
    }
    ConfigMap {
        metadata: cluster.child_meta(dashboard_config_map(&cluster.name), labels),
        data: Some(
            DASHBOARDS
                .iter()
                .map(|(name, json)| (name.to_string(), json.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}
