//! Prometheus Operator objects: a ServiceMonitor scraping every process's `metrics` port, and a
//! PrometheusRule with the alerts an on-call engineer needs first. Built only when the spec asks
//! and the CRDs exist (checked by discovery).

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::BuildError;
use crate::naming::{LABEL_GROUP, LABEL_INSTANCE, LABEL_METRICS, instance_labels};
use crate::validate::ValidatedCluster;

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

fn object(
    cluster: &ValidatedCluster,
    resource: &ApiResource,
    labels: &std::collections::BTreeMap<String, String>,
    spec: serde_json::Value,
) -> DynamicObject {
    let mut all = instance_labels(&cluster.name);
    all.extend(labels.clone());
    let mut object = DynamicObject::new(&cluster.name, resource).data(json!({ "spec": spec }));
    object.metadata = cluster.child_meta(cluster.name.clone(), all);
    object
}

pub fn service_monitor(cluster: &ValidatedCluster) -> Result<DynamicObject, BuildError> {
    let sm = &cluster.spec.monitoring.service_monitor;
    Ok(object(
        cluster,
        &service_monitor_resource(),
        &sm.labels,
        json!({
            "selector": {"matchLabels": {
                LABEL_INSTANCE: cluster.name,
                LABEL_METRICS: "true",
            }},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "targetLabels": [LABEL_GROUP],
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": sm.interval}],
        }),
    ))
}

/// Alert rules. Data-plane metric names are the contract with `parsec --metrics-listen`.
pub fn prometheus_rule(cluster: &ValidatedCluster) -> Result<DynamicObject, BuildError> {
    let ns = &cluster.namespace;
    let rules = json!([
        {
            "alert": "ParsecRaftGroupWithoutLeader",
            "expr": format!("max by (namespace, service) (parsec_raft_is_leader{{namespace=\"{ns}\"}}) < 1"),
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "Raft group {{ $labels.service }} has no leader",
                "description": "No member of {{ $labels.service }} has been leader for a minute: the group accepts no writes."
            }
        },
        {
            "alert": "ParsecMemberDown",
            "expr": format!("up{{namespace=\"{ns}\", service=~\"{}-.*\"}} == 0", cluster.name),
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "{{ $labels.pod }} is not serving metrics",
                "description": "{{ $labels.pod }} has been unreachable for five minutes."
            }
        },
        {
            "alert": "ParsecTransactionErrors",
            "expr": format!(
                "sum(rate(parsec_agent_transactions_total{{namespace=\"{ns}\", outcome!=\"committed\"}}[5m])) / sum(rate(parsec_agent_transactions_total{{namespace=\"{ns}\"}}[5m])) > 0.05"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "More than 5% of transactions fail",
                "description": "Agents of {{ $labels.namespace }} fail more than 5% of transactions."
            }
        },
        {
            "alert": "ParsecVolumeAlmostFull",
            "expr": format!(
                "kubelet_volume_stats_used_bytes{{namespace=\"{ns}\", persistentvolumeclaim=~\"data-{}-.*\"}} / kubelet_volume_stats_capacity_bytes{{namespace=\"{ns}\", persistentvolumeclaim=~\"data-{}-.*\"}} > 0.8",
                cluster.name, cluster.name
            ),
            "for": "15m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "Volume {{ $labels.persistentvolumeclaim }} is over 80% full",
                "description": "Grow spec.shards.storage.size (or ticketMachine.storage.size); volumes expand in place."
            }
        }
    ]);
    Ok(object(
        cluster,
        &prometheus_rule_resource(),
        &cluster.spec.monitoring.prometheus_rule.labels,
        json!({"groups": [{"name": format!("parsec-{}", cluster.name), "rules": rules}]}),
    ))
}
