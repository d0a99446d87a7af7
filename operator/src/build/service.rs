//! Services: a headless one per Raft group (stable per-pod DNS names, published before the pods
//! are ready so that members find each other while forming a quorum), and the agents' Service
//! that clients use.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::naming::{
    AGENT_GRPC_PORT, Group, JSON_RPC_PORT, LABEL_METRICS, METRICS_PORT, agent_labels,
    agent_selector, agent_service, group_labels, group_selector,
};
use crate::validate::ValidatedCluster;

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        app_protocol: match name {
            "grpc" => Some("kubernetes.io/h2c".into()),
            _ => Some("http".into()),
        },
        ..ServicePort::default()
    }
}

pub fn headless(cluster: &ValidatedCluster, group: Group) -> Service {
    let mut labels = group_labels(&cluster.name, group);
    labels.insert(LABEL_METRICS.into(), "true".into());
    Service {
        metadata: cluster.child_meta(group.stateful_set(&cluster.name), labels),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(group_selector(&cluster.name, group)),
            ports: Some(vec![
                port("grpc", group.port()),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub fn agents(cluster: &ValidatedCluster) -> Service {
    let mut labels = agent_labels(&cluster.name);
    labels.insert(LABEL_METRICS.into(), "true".into());
    let mut metadata = cluster.child_meta(agent_service(&cluster.name), labels);
    let service = &cluster.spec.agents.service;
    if !service.annotations.is_empty() {
        metadata.annotations = Some(service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service.type_.as_str().into()),
            selector: Some(agent_selector(&cluster.name)),
            ports: Some(vec![
                port("json-rpc", JSON_RPC_PORT),
                port("grpc", AGENT_GRPC_PORT),
                port("metrics", METRICS_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}
