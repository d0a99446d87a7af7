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

/// The alert rules of every cluster: the plain rules file of `manifests/monitoring/`, the one
/// copy `promtool` checks and the Prometheus test evaluates.
pub const RULES: &str = include_str!("../../../manifests/monitoring/parsec-rules.yaml");

/// Alert rules, as a PrometheusRule. The rules aggregate by `namespace`, so one object serves
/// every cluster a Prometheus watches (two clusters' identical alerts deduplicate).
pub fn prometheus_rule(cluster: &ValidatedCluster) -> Result<DynamicObject, BuildError> {
    let rules: serde_json::Value = serde_yaml::from_str(RULES).map_err(BuildError::Rules)?;
    Ok(object(
        cluster,
        &prometheus_rule_resource(),
        &cluster.spec.monitoring.prometheus_rule.labels,
        json!({"groups": rules["groups"]}),
    ))
}
