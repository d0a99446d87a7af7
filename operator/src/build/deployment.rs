//! The agents: stateless, so a Deployment. With autoscaling on, `replicas` is left out of what the
//! operator applies, so the HorizontalPodAutoscaler owns it (see `controller::apply` for the
//! hand-over that keeps the API server from resetting it to 1).

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::pod;
use crate::naming::{
    AGENT_GRPC_PORT, JSON_RPC_PORT, METRICS_PORT, agent_deployment, agent_labels, agent_selector,
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

pub fn agents(cluster: &ValidatedCluster, config_hash: &str, tls_hash: Option<&str>) -> Deployment {
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
    container.volume_mounts = Some(vec![pod::topology_mount()]);

    let mut pod_spec = pod::pod_spec(
        container,
        vec![pod::topology_volume(cluster)],
        cluster.spec.agents.termination_grace_period_seconds,
    );
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
                    annotations: Some(pod::template_annotations(config_hash, tls_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}
