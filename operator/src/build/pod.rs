//! Pod pieces every role shares: the container's command line, environment, probes, security
//! context and placement.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    GRPCAction, LocalObjectReference, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecurityContext, TopologySpreadConstraint,
    Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::crd::AntiAffinity;
use crate::naming::{
    DATA_DIR, DATA_VOLUME, Group, LABEL_POD_INDEX, METRICS_PORT, RAFT_HEALTH_SERVICE, TOPOLOGY_DIR,
    TOPOLOGY_FILE, TOPOLOGY_VOLUME, topology_config_map,
};
use crate::validate::ValidatedCluster;
use k8s_openapi::api::core::v1::ResourceRequirements;

pub const CONTAINER: &str = "parsec";
const RUN_AS: i64 = 10001;

fn topology_path() -> String {
    format!("{TOPOLOGY_DIR}/{TOPOLOGY_FILE}")
}

/// `parsec shard …` / `parsec ticketer …`: the command line of a Raft member. Its node id is its
/// ordinal, from the pod-index label through `$(POD_INDEX)`.
pub fn raft_args(group: Group) -> Vec<String> {
    let listen = format!("0.0.0.0:{}", group.port());
    let mut args = match group {
        Group::TicketMachine => vec!["ticketer".to_string()],
        Group::Shard(i) => vec!["shard".to_string(), "--shard".into(), i.to_string()],
    };
    args.extend([
        "--topology".into(),
        topology_path(),
        "--node".into(),
        "$(POD_INDEX)".into(),
        "--listen".into(),
        listen,
        "--data-dir".into(),
        DATA_DIR.into(),
        "--metrics-listen".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ]);
    args
}

/// `parsec agent …`: agents name themselves after their pod.
pub fn agent_args() -> Vec<String> {
    use crate::naming::{AGENT_GRPC_PORT, JSON_RPC_PORT};
    vec![
        "agent".into(),
        "--topology".into(),
        topology_path(),
        "--name".into(),
        "$(POD_NAME)".into(),
        "--listen".into(),
        format!("0.0.0.0:{AGENT_GRPC_PORT}"),
        "--rpc-listen".into(),
        format!("0.0.0.0:{JSON_RPC_PORT}"),
        "--metrics-listen".into(),
        format!("0.0.0.0:{METRICS_PORT}"),
    ]
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn value_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// Environment of every container: identity from the downward API, the log filter, and the
/// chain settings (read by the EVM runner through clap's `env`).
pub fn env(cluster: &ValidatedCluster, raft: bool) -> Vec<EnvVar> {
    let mut env = vec![field_env("POD_NAME", "metadata.name")];
    if raft {
        env.push(field_env(
            "POD_INDEX",
            &format!("metadata.labels['{LABEL_POD_INDEX}']"),
        ));
    }
    env.push(value_env(
        "RUST_LOG",
        format!("{},openraft=warn", cluster.spec.log_level.as_str()),
    ));
    env.push(value_env("PARSEC_LOG_FORMAT", "json"));
    let chain = &cluster.spec.chain;
    env.push(value_env("PARSEC_CHAIN_ID", chain.chain_id.to_string()));
    env.push(value_env(
        "PARSEC_BLOCK_INTERVAL_MS",
        chain.block_interval_ms.to_string(),
    ));
    if !raft {
        env.push(value_env("PARSEC_BASE_FEE_WEI", chain.base_fee_wei.clone()));
        if let Some(recipient) = &chain.fee_recipient {
            env.push(value_env("PARSEC_FEE_RECIPIENT", recipient.clone()));
        }
        env.push(value_env(
            "PARSEC_DEV_ACCOUNTS",
            chain.dev_accounts.to_string(),
        ));
        let runners: Vec<&str> = cluster
            .spec
            .agents
            .runners
            .iter()
            .map(|r| match r {
                crate::crd::Runner::Evm => "evm",
                crate::crd::Runner::Lua => "lua",
            })
            .collect();
        env.push(value_env("PARSEC_RUNNERS", runners.join(",")));
    }
    env
}

pub fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// A native gRPC probe (grpc.health.v1) of `service` on `port`.
pub fn grpc_probe(port: i32, service: &str, period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port,
            service: Some(service.into()),
            ..GRPCAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// Probes of a Raft member: alive while the process serves; ready while it is a member that
/// knows its leader and has caught up; up to two minutes to open its log at start.
pub fn raft_probes(group: Group) -> (Probe, Probe, Probe) {
    let port = group.port();
    (
        grpc_probe(port, "", 2, 60),
        grpc_probe(port, "", 10, 3),
        grpc_probe(port, RAFT_HEALTH_SERVICE, 5, 2),
    )
}

pub fn security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

pub fn topology_volume(cluster: &ValidatedCluster) -> Volume {
    Volume {
        name: TOPOLOGY_VOLUME.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: topology_config_map(&cluster.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub fn topology_mount() -> VolumeMount {
    VolumeMount {
        name: TOPOLOGY_VOLUME.into(),
        mount_path: TOPOLOGY_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

pub fn data_mount() -> VolumeMount {
    VolumeMount {
        name: DATA_VOLUME.into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    }
}

/// The one container, with what every role shares filled in.
pub fn container(cluster: &ValidatedCluster, resources: Option<ResourceRequirements>) -> Container {
    Container {
        name: CONTAINER.into(),
        image: Some(cluster.image()),
        image_pull_policy: cluster.spec.image.pull_policy.map(|p| format!("{p:?}")),
        resources,
        security_context: Some(security_context()),
        ..Container::default()
    }
}

/// Spread over zones and (anti-)affinity between pods carrying `selector`, node selector and
/// tolerations: everything placement-related of a pod spec.
pub fn place(cluster: &ValidatedCluster, spec: &mut PodSpec, selector: &BTreeMap<String, String>) {
    let placement = &cluster.spec.placement;
    let label_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        ..LabelSelector::default()
    };
    let term = PodAffinityTerm {
        label_selector: Some(label_selector.clone()),
        topology_key: "kubernetes.io/hostname".into(),
        ..PodAffinityTerm::default()
    };
    spec.affinity = match placement.anti_affinity {
        AntiAffinity::None => None,
        AntiAffinity::Preferred => Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: term,
                    },
                ]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
        AntiAffinity::Required => Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }),
    };
    if placement.zone_spread {
        spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(label_selector),
            ..TopologySpreadConstraint::default()
        }]);
    }
    if !placement.node_selector.is_empty() {
        spec.node_selector = Some(placement.node_selector.clone());
    }
    if !placement.tolerations.is_empty() {
        spec.tolerations = Some(placement.tolerations.clone());
    }
    if !cluster.spec.image.pull_secrets.is_empty() {
        spec.image_pull_secrets = Some(
            cluster
                .spec
                .image
                .pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect(),
        );
    }
}
