//! Names, labels, ports and addresses: the one place that decides how objects are called.

use std::collections::BTreeMap;

/// The field manager of every server-side apply, and the `managed-by` label value.
pub const FIELD_MANAGER: &str = "parsec-operator";
/// A second field manager used once, to hand `spec.replicas` of the agent Deployment to the
/// HorizontalPodAutoscaler without the API server resetting it to 1 (see `controller::apply`).
pub const HPA_HANDOVER_MANAGER: &str = "parsec-operator-hpa-handover";

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_GROUP: &str = "parsec.dev/group";
/// Set on Services whose `metrics` port the ServiceMonitor scrapes.
pub const LABEL_METRICS: &str = "parsec.dev/metrics";
/// Set by the StatefulSet controller (Kubernetes ≥ 1.28) on every pod: its ordinal.
pub const LABEL_POD_INDEX: &str = "apps.kubernetes.io/pod-index";
pub const LABEL_REVISION: &str = "controller-revision-hash";
pub const ANNOTATION_CONFIG_HASH: &str = "parsec.dev/config-hash";
/// Hash of the TLS Secret's content on pod templates: a new certificate rolls the pods (every
/// process loads its certificate at start).
pub const ANNOTATION_TLS_HASH: &str = "parsec.dev/tls-hash";

pub const APP: &str = "parsec";

pub const SHARD_PORT: i32 = 7100;
pub const TICKETER_PORT: i32 = 7200;
pub const AGENT_GRPC_PORT: i32 = 7400;
pub const JSON_RPC_PORT: i32 = 8545;
pub const METRICS_PORT: i32 = 9100;

pub const TOPOLOGY_DIR: &str = "/etc/parsec";
pub const TOPOLOGY_FILE: &str = "topology.yaml";
pub const DATA_DIR: &str = "/var/lib/parsec";
pub const DATA_VOLUME: &str = "data";
pub const TOPOLOGY_VOLUME: &str = "topology";
/// Where the certificate is mounted, inside the topology volume (one projected volume).
pub const TLS_DIR: &str = "tls";
/// The keys of the TLS Secret, which are also the file names under [`TLS_DIR`].
pub const TLS_CA_KEY: &str = "ca.crt";
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// The metrics server's health paths (`--metrics-listen`): the process answers; the process is
/// ready (a Raft member that knows its leader and caught up, an agent that reaches every shard
/// and the ticket machine).
pub const LIVENESS_PATH: &str = "/healthz";
pub const READINESS_PATH: &str = "/readyz";

/// The label every pod of the operator carries (chart and plain manifests alike): what the
/// NetworkPolicies admit to the Raft members' admin API.
pub const OPERATOR_POD_LABELS: [(&str, &str); 1] = [(LABEL_NAME, "parsec-operator")];
/// The label the API server sets on every namespace: its name.
pub const LABEL_NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// A Raft group of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    TicketMachine,
    Shard(u32),
}

impl Group {
    /// `ticket-machine` or `shard-N`: the group's name in status, labels and operations.
    pub fn id(self) -> String {
        match self {
            Group::TicketMachine => "ticket-machine".into(),
            Group::Shard(i) => format!("shard-{i}"),
        }
    }

    pub fn parse(id: &str) -> Option<Group> {
        if id == "ticket-machine" {
            return Some(Group::TicketMachine);
        }
        id.strip_prefix("shard-")?.parse().ok().map(Group::Shard)
    }

    pub fn component(self) -> &'static str {
        match self {
            Group::TicketMachine => "ticket-machine",
            Group::Shard(_) => "shard",
        }
    }

    pub fn port(self) -> i32 {
        match self {
            Group::TicketMachine => TICKETER_PORT,
            Group::Shard(_) => SHARD_PORT,
        }
    }

    /// StatefulSet name, which is also its headless Service's name.
    pub fn stateful_set(self, cluster: &str) -> String {
        match self {
            Group::TicketMachine => format!("{cluster}-ticketer"),
            Group::Shard(i) => format!("{cluster}-shard-{i}"),
        }
    }

    pub fn pod(self, cluster: &str, ordinal: u64) -> String {
        format!("{}-{ordinal}", self.stateful_set(cluster))
    }

    /// `host:port` of member `ordinal`, stable across restarts: the pod's DNS name under the
    /// group's headless Service. The `.svc` suffix resolves whatever the cluster domain is.
    pub fn address(self, cluster: &str, namespace: &str, ordinal: u64) -> String {
        let sts = self.stateful_set(cluster);
        format!("{sts}-{ordinal}.{sts}.{namespace}.svc:{}", self.port())
    }

    /// Every group of a cluster with `shards` shards, in the order operations visit them:
    /// the ticket machine first, then the shards (servers before clients).
    pub fn all(shards: u32) -> Vec<Group> {
        std::iter::once(Group::TicketMachine)
            .chain((0..shards).map(Group::Shard))
            .collect()
    }
}

pub fn topology_config_map(cluster: &str) -> String {
    format!("{cluster}-topology")
}

pub fn agent_deployment(cluster: &str) -> String {
    format!("{cluster}-agent")
}

/// The Service clients use: JSON-RPC and gRPC of the agents.
pub fn agent_service(cluster: &str) -> String {
    format!("{cluster}-rpc")
}

pub fn agent_pdb(cluster: &str) -> String {
    format!("{cluster}-agent")
}

/// The NetworkPolicy of one role (`shard`, `ticket-machine`, `agent`).
pub fn network_policy(cluster: &str, component: &str) -> String {
    format!("{cluster}-{component}")
}

/// The Secret cert-manager writes the cluster's certificate to, and the Certificate's name.
pub fn tls_secret(cluster: &str) -> String {
    format!("{cluster}-tls")
}

/// The DNS names of a Service: short, namespaced, `.svc` (what the topology uses) and with the
/// default cluster domain.
pub fn service_dns_names(service: &str, namespace: &str) -> [String; 4] {
    [
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

pub fn dashboard_config_map(cluster: &str) -> String {
    format!("{cluster}-dashboards")
}

pub fn json_rpc_endpoint(cluster: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{JSON_RPC_PORT}",
        agent_service(cluster)
    )
}

/// Labels on every object of a cluster: what orphan cleanup selects on.
pub fn instance_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
    ])
}

/// The selector string matching every object the operator made for `cluster`.
pub fn instance_selector(cluster: &str) -> String {
    format!("{LABEL_INSTANCE}={cluster},{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

/// Labels selecting the pods of one group (stable: used in StatefulSet selectors).
pub fn group_selector(cluster: &str, group: Group) -> BTreeMap<String, String> {
    let mut labels = component_selector(cluster, group.component());
    labels.insert(LABEL_GROUP.to_string(), group.id());
    labels
}

pub fn group_labels(cluster: &str, group: Group) -> BTreeMap<String, String> {
    let mut labels = instance_labels(cluster);
    labels.extend(group_selector(cluster, group));
    labels
}

/// Labels selecting every pod of one role (every shard, or the ticket machine) of a cluster.
pub fn component_selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), APP.to_string()),
        (LABEL_INSTANCE.to_string(), cluster.to_string()),
        (LABEL_COMPONENT.to_string(), component.to_string()),
    ])
}

/// Labels selecting the agent pods (stable: used in the Deployment selector).
pub fn agent_selector(cluster: &str) -> BTreeMap<String, String> {
    component_selector(cluster, AGENT_COMPONENT)
}

pub const AGENT_COMPONENT: &str = "agent";

pub fn agent_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = instance_labels(cluster);
    labels.extend(agent_selector(cluster));
    labels
}

/// `k=v,k=v` for a label map (sorted, as BTreeMap iterates).
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The ordinal of a StatefulSet pod, from its name.
pub fn ordinal_of(pod: &str) -> Option<u64> {
    pod.rsplit_once('-')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_round_trip() {
        for group in Group::all(3) {
            assert_eq!(Group::parse(&group.id()), Some(group));
        }
        assert_eq!(Group::parse("shard-x"), None);
        assert_eq!(Group::parse("agents"), None);
    }

    #[test]
    fn addresses_name_the_pod_under_its_headless_service() {
        assert_eq!(
            Group::Shard(1).address("demo", "ns", 2),
            "demo-shard-1-2.demo-shard-1.ns.svc:7100"
        );
        assert_eq!(
            Group::TicketMachine.address("demo", "ns", 0),
            "demo-ticketer-0.demo-ticketer.ns.svc:7200"
        );
        assert_eq!(ordinal_of("demo-shard-1-12"), Some(12));
    }
}
