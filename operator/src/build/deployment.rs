//! The agents: stateless, so a Deployment. With autoscaling on, `replicas` is left out of what the
//! operator applies, so the HorizontalPodAutoscaler owns it (see `controller::apply` for the
//! hand-over that keeps the API server from resetting it to 1).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod;
use crate::naming::{
    AGENT_GRPC_PORT, ANNOTATION_CONFIG_HASH, JSON_RPC_PORT, METRICS_PORT, agent_deployment,
    agent_labels, agent_selector,
};
use crate::validate::ValidatedCluster;

/// The replicas the operator applies: none when an HPA owns them, zero when stopped.
pub fn applied_replicas(cluster: &ValidatedCluster) -> Option<i32> {
    if cluster.spec.cluster_operation.stopped {
        Some(0)
    } else if cluster.spec.agents.autoscaling.is_some() {
        None
    } else {
        Some(cluster.spec.agents.replicas)
    }
}

pub fn agents(cluster: &ValidatedCluster, config_hash: &str) -> Deployment {
    let labels = agent_labels(&cluster.name);
    let selector = agent_selector(&cluster.name);
    let mut container = pod::container(cluster, cluster.spec.agents.resources.clone());
    container.args = Some(pod::agent_args());
    container.env = Some(pod::env(cluster, false));
    container.ports = Some(vec![
        pod::port("grpc", AGENT_GRPC_PORT),
        pod::port("json-rpc", JSON_RPC_PORT),
        pod::port("metrics", METRICS_PORT),
    ]);
    container.startup_probe = Some(pod::grpc_probe(AGENT_GRPC_PORT, "", 2, 60));
    container.liveness_probe = Some(pod::grpc_probe(AGENT_GRPC_PORT, "", 10, 3));
    container.readiness_probe = Some(pod::grpc_probe(AGENT_GRPC_PORT, "", 5, 2));
    container.volume_mounts = Some(vec![pod::topology_mount()]);

    let mut pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(vec![pod::topology_volume(cluster)]),
        security_context: Some(pod::pod_security_context()),
        termination_grace_period_seconds: Some(
            cluster.spec.agents.termination_grace_period_seconds,
        ),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    pod::place(cluster, &mut pod_spec, &selector);

    Deployment {
        metadata: cluster.child_meta(agent_deployment(&cluster.name), labels.clone()),
        spec: DeploymentSpec {
            replicas: applied_replicas(cluster),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_CONFIG_HASH.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}
