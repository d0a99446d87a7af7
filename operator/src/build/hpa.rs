//! The agents' autoscaling/v2 HorizontalPodAutoscaler, when `agents.autoscaling` is set.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, PodsMetricSource, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::naming::{agent_deployment, agent_labels};
use crate::validate::ValidatedCluster;

/// The per-pod metric agents serve and a custom-metrics adapter exposes.
pub const IN_FLIGHT_METRIC: &str = "parsec_agent_inflight_transactions";

pub fn agents(cluster: &ValidatedCluster) -> Option<HorizontalPodAutoscaler> {
    let auto = cluster.spec.agents.autoscaling.as_ref()?;
    if cluster.spec.cluster_operation.stopped {
        // An HPA would scale a stopped Deployment back up (it never scales from 0, but it
        // fights a 0 set by us when min > 0).
        return None;
    }
    let mut metrics = Vec::new();
    if let Some(cpu) = auto.target_cpu_utilization_percentage {
        metrics.push(MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(cpu),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    if let Some(in_flight) = auto.target_in_flight_transactions {
        metrics.push(MetricSpec {
            type_: "Pods".into(),
            pods: Some(PodsMetricSource {
                metric: MetricIdentifier {
                    name: IN_FLIGHT_METRIC.into(),
                    selector: None,
                },
                target: MetricTarget {
                    type_: "AverageValue".into(),
                    average_value: Some(Quantity(in_flight.to_string())),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        });
    }
    let name = agent_deployment(&cluster.name);
    Some(HorizontalPodAutoscaler {
        metadata: cluster.child_meta(name.clone(), agent_labels(&cluster.name)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name,
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(metrics),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                // Scale in slowly: agents drain their transactions before they go.
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(300),
                    ..HPAScalingRules::default()
                }),
                ..HorizontalPodAutoscalerBehavior::default()
            }),
        },
        status: None,
    })
}
