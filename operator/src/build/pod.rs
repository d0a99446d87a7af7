//! Pod pieces every role shares: the container's command line, environment, probes, security
//! context and placement.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, ContainerPort,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, ObjectFieldSelector,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parsec_core::TlsFiles;

use crate::crd::AntiAffinity;
use crate::naming::{
    ANNOTATION_CONFIG_HASH, ANNOTATION_TLS_HASH, DATA_DIR, DATA_VOLUME, Group, LABEL_POD_INDEX,
    LIVENESS_PATH, METRICS_PORT, READINESS_PATH, TLS_CA_KEY, TLS_CERT_KEY, TLS_DIR, TLS_KEY_KEY,
    TOPOLOGY_DIR, TOPOLOGY_FILE, TOPOLOGY_VOLUME, topology_config_map,
};
use crate::validate::ValidatedCluster;

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

/// An HTTP probe of `path` on the metrics port.
fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("metrics".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// Startup, liveness and readiness probes of every role, on the metrics server's plain HTTP
/// port. Not gRPC probes: with mutual TLS every gRPC port demands a client certificate, which
/// the kubelet cannot present; and the gRPC health service follows readiness, so as a liveness
/// probe it would restart a Raft member merely for having lost its leader. `/healthz` answers
/// while the process runs (whatever its log replay takes); `/readyz` reports what gRPC health
/// reports: a Raft member that knows its leader and caught up, an agent that reaches every
/// shard and the ticket machine.
pub fn probes() -> (Probe, Probe, Probe) {
    (
        http_probe(LIVENESS_PATH, 2, 60),
        http_probe(LIVENESS_PATH, 10, 3),
        http_probe(READINESS_PATH, 5, 2),
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

/// Where every process finds the cluster's certificate (the topology's `tls`).
pub fn tls_files() -> TlsFiles {
    let file = |key: &str| format!("{TOPOLOGY_DIR}/{TLS_DIR}/{key}").into();
    TlsFiles {
        ca_file: file(TLS_CA_KEY),
        cert_file: file(TLS_CERT_KEY),
        key_file: file(TLS_KEY_KEY),
    }
}

/// Owner and group (the pod's fsGroup) may read; the private key is readable by nobody else.
const TLS_FILE_MODE: i32 = 0o440;

/// The read-only configuration of every process: the topology, and with TLS the certificate
/// under `tls/`. One projected volume rather than a second mount inside the first (a mount point
/// in a ConfigMap volume is fragile).
pub fn topology_volume(cluster: &ValidatedCluster) -> Volume {
    let topology = topology_config_map(&cluster.name);
    let Some(tls) = &cluster.spec.tls else {
        return Volume {
            name: TOPOLOGY_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: topology,
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        };
    };
    let item = |key: &str| KeyToPath {
        key: key.into(),
        path: format!("{TLS_DIR}/{key}"),
        ..KeyToPath::default()
    };
    Volume {
        name: TOPOLOGY_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(TLS_FILE_MODE),
            sources: Some(vec![
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: topology,
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: tls.secret(&cluster.name),
                        items: Some(vec![
                            item(TLS_CA_KEY),
                            item(TLS_CERT_KEY),
                            item(TLS_KEY_KEY),
                        ]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
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

/// Annotations of a pod template: the hash of the configuration it runs with and, with TLS, of
/// the certificate it mounts (known once the operator has read the Secret). Either changing rolls
/// the pods.
pub fn template_annotations(config_hash: &str, tls_hash: Option<&str>) -> BTreeMap<String, String> {
    let mut annotations =
        BTreeMap::from([(ANNOTATION_CONFIG_HASH.to_string(), config_hash.to_string())]);
    if let Some(hash) = tls_hash {
        annotations.insert(ANNOTATION_TLS_HASH.to_string(), hash.to_string());
    }
    annotations
}

/// A pod of `container` with the settings every role shares: non-root, RuntimeDefault seccomp,
/// no service account token (the data plane never calls the API server), no service links.
pub fn pod_spec(container: Container, volumes: Vec<Volume>, grace_seconds: i64) -> PodSpec {
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(pod_security_context()),
        automount_service_account_token: Some(false),
        termination_grace_period_seconds: Some(grace_seconds),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The one container, with what every role shares filled in.
pub fn container(cluster: &ValidatedCluster, resources: Option<ResourceRequirements>) -> Container {
    let (startup, liveness, readiness) = probes();
    Container {
        name: CONTAINER.into(),
        image: Some(cluster.image()),
        image_pull_policy: cluster.spec.image.pull_policy.map(|p| format!("{p:?}")),
        resources,
        security_context: Some(security_context()),
        startup_probe: Some(startup),
        liveness_probe: Some(liveness),
        readiness_probe: Some(readiness),
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
