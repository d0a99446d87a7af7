//! `ParsecCluster.spec`: what the user asks for.
//!
//! Rules the API server enforces (CEL, `x-kubernetes-validations`) are declared here next to the
//! fields they guard; `crate::validate` re-checks what CEL cannot express and what a stale CRD
//! would let through.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ParsecClusterStatus;

/// A Parsec cluster: sharded, Raft-replicated storage, a Raft-replicated ticket machine and
/// stateless agents serving Ethereum JSON-RPC.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "parsec.dev",
    version = "v1alpha1",
    kind = "ParsecCluster",
    plural = "parsecclusters",
    shortname = "pc",
    category = "parsec",
    namespaced,
    status = "ParsecClusterStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.agents.replicas",
        status_replicas_path = ".status.agents.replicas",
        label_selector_path = ".status.agents.selector"
    ),
    printcolumn(name = "Shards", type_ = "integer", json_path = ".spec.shards.count"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.shards.replicas"),
    printcolumn(name = "Agents", type_ = "integer", json_path = ".status.agents.readyReplicas"),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(name = "Operation", type_ = "string", json_path = ".status.operation.kind"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40")
        .message("metadata.name must be at most 40 characters (pod and volume names derive from it)")
)]
#[x_kube(validation = Rule::new(TLS_TOGGLE_RULE).message(
    "tls can be turned on or off only together with clusterOperation.stopped: plain and mTLS \
     members cannot talk to each other, so a rolling restart cannot switch a running cluster"
))]
#[serde(rename_all = "camelCase")]
pub struct ParsecClusterSpec {
    /// The one image every role runs (binary `parsec`).
    pub image: ImageSpec,
    /// Log filter of every process (RUST_LOG syntax is not accepted here: one level).
    #[serde(default)]
    pub log_level: LogLevel,
    pub shards: ShardsSpec,
    #[serde(default)]
    pub ticket_machine: TicketMachineSpec,
    #[serde(default)]
    pub agents: AgentsSpec,
    #[serde(default)]
    pub chain: ChainSpec,
    #[serde(default)]
    pub placement: PlacementSpec,
    #[serde(default)]
    pub monitoring: MonitoringSpec,
    #[serde(default)]
    pub cluster_operation: ClusterOperation,
    #[serde(default)]
    pub pvc_retention: PvcRetention,
    /// Mutual TLS between every component (Raft, the admin API, shards, ticket machine, agents'
    /// gRPC). Absent: plain gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

/// Turning TLS on or off is allowed only when the old or the new spec stops the cluster: then no
/// pod of the old mode runs next to one of the new mode.
const TLS_TOGGLE_RULE: &str = "has(self.tls) == has(oldSelf.tls) \
    || (has(self.clusterOperation) && has(self.clusterOperation.stopped) && self.clusterOperation.stopped) \
    || (has(oldSelf.clusterOperation) && has(oldSelf.clusterOperation.stopped) && oldSelf.clusterOperation.stopped)";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// e.g. `ghcr.io/example/parsec`.
    #[schemars(length(min = 1))]
    pub repository: String,
    #[schemars(length(min = 1))]
    pub tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Names of Secrets in the cluster's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// The shards: `count` Raft groups of `replicas` members each.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.count == oldSelf.count")
    .message("shards.count is immutable: keys are placed by hash modulo the shard count"))]
#[serde(rename_all = "camelCase")]
pub struct ShardsSpec {
    /// Number of shards. Immutable after creation.
    #[schemars(range(min = 1, max = 256))]
    pub count: u32,
    /// Members of each shard's Raft group: odd, 1 to 7. Changed one member at a time.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("replicas must be odd (1, 3, 5 or 7)"))]
    pub replicas: i32,
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// The ticket machine: one Raft group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketMachineSpec {
    /// Members of the ticket machine's Raft group: odd, 1 to 7.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 7))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("replicas must be odd (1, 3, 5 or 7)"))]
    pub replicas: i32,
    #[serde(default)]
    pub storage: StorageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for TicketMachineSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            storage: StorageSpec::default(),
            resources: None,
        }
    }
}

fn default_replicas() -> i32 {
    3
}

/// A Raft member's persistent volume. The size may grow (volumes are expanded in place where the
/// StorageClass allows it), never shrink.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0")
    .message("storage.size may grow but never shrink"))]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// A Kubernetes quantity, e.g. `10Gi`.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self)").message("size must be a quantity such as 10Gi"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when absent. Immutable in practice (a
    /// StatefulSet's volume claim template cannot change class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    Evm,
    Lua,
}

/// Stateless agents: JSON-RPC front end, runners, broker. A Deployment, optionally autoscaled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentsSpec {
    /// Runtimes the agents run side by side.
    #[serde(default = "default_runners")]
    #[schemars(length(min = 1, max = 2))]
    pub runners: Vec<Runner>,
    /// Agent pods. With `autoscaling` set this is ignored: the HorizontalPodAutoscaler owns the
    /// count. `kubectl scale parseccluster/NAME --replicas=N` writes this field.
    #[serde(default = "default_agent_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    #[serde(default)]
    pub service: AgentServiceSpec,
    /// Per-client limits of the JSON-RPC endpoint. A client is an IP address (IPv6: its /64):
    /// only useful where client addresses reach the pods (e.g. `externalTrafficPolicy: Local`
    /// or a proxy preserving them); behind one that does not, every client shares its address.
    #[serde(default, skip_serializing_if = "RpcLimitsSpec::is_empty")]
    pub rpc_limits: RpcLimitsSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Time an agent gets to finish its transactions on scale-in or upgrade.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 1, max = 3600))]
    pub termination_grace_period_seconds: i64,
}

impl Default for AgentsSpec {
    fn default() -> Self {
        Self {
            runners: default_runners(),
            replicas: default_agent_replicas(),
            autoscaling: None,
            service: AgentServiceSpec::default(),
            rpc_limits: RpcLimitsSpec::default(),
            resources: None,
            termination_grace_period_seconds: default_grace(),
        }
    }
}

fn default_runners() -> Vec<Runner> {
    vec![Runner::Evm, Runner::Lua]
}

fn default_agent_replicas() -> i32 {
    2
}

fn default_grace() -> i64 {
    30
}

/// An autoscaling/v2 HorizontalPodAutoscaler for the agents.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas"))]
#[x_kube(validation = Rule::new("has(self.targetCPUUtilizationPercentage) || has(self.targetInFlightTransactions)")
    .message("autoscaling needs a target: CPU and/or in-flight transactions"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilisation (percent of requests) to aim for.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// Average in-flight transactions per agent to aim for (the per-pod metric
    /// `parsec_agent_inflight_transactions`, served through a custom-metrics adapter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_in_flight_transactions: Option<i32>,
}

/// Per-client limits of each agent's JSON-RPC endpoint; absent fields mean no limit.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RpcLimitsSpec {
    /// Calls per second one client may make (each call of a batch counts); over it, calls are
    /// answered with JSON-RPC error -32005.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_second: Option<u32>,
    /// Calls a client may make at once after being idle (default: `requestsPerSecond`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: Option<u32>,
    /// TCP connections one client may hold open at each agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_connections_per_client: Option<u32>,
}

impl RpcLimitsSpec {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// The Service in front of the agents (JSON-RPC on 8545, gRPC on 7400).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// What the EVM presents to clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainSpec {
    /// EIP-155 chain id (default 0xcbdc).
    #[serde(default = "default_chain_id")]
    #[schemars(range(min = 1))]
    pub chain_id: u64,
    /// How often the ticket machine advances the logical block number.
    #[serde(default = "default_block_interval")]
    #[schemars(range(min = 10, max = 60000))]
    pub block_interval_ms: u64,
    /// Base fee per gas in wei, as a decimal string (a CBDC may run at zero).
    #[serde(default = "default_base_fee")]
    #[schemars(regex(pattern = r"^[0-9]{1,78}$"))]
    pub base_fee_wei: String,
    /// Where charged fees go; burnt when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0x[0-9a-fA-F]{40}$"))]
    pub fee_recipient: Option<String>,
    /// Fund the standard development accounts at genesis. Never in production.
    #[serde(default)]
    pub dev_accounts: bool,
}

impl Default for ChainSpec {
    fn default() -> Self {
        Self {
            chain_id: default_chain_id(),
            block_interval_ms: default_block_interval(),
            base_fee_wei: default_base_fee(),
            fee_recipient: None,
            dev_accounts: false,
        }
    }
}

fn default_chain_id() -> u64 {
    0xcbdc
}

fn default_block_interval() -> u64 {
    200
}

fn default_base_fee() -> String {
    "0".into()
}

/// Where pods run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Spread each Raft group (and the agents) evenly over `topology.kubernetes.io/zone`.
    #[serde(default = "default_true")]
    pub zone_spread: bool,
    /// Keep members of one Raft group on different nodes.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

impl Default for PlacementSpec {
    fn default() -> Self {
        Self {
            zone_spread: true,
            anti_affinity: AntiAffinity::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AntiAffinity {
    /// Prefer different nodes (weight 100).
    #[default]
    Preferred,
    /// Require different nodes: a group of N needs N schedulable nodes.
    Required,
    None,
}

/// Prometheus Operator and Grafana integration. Objects are created only when their CRDs exist.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    #[serde(default)]
    pub prometheus_rule: PrometheusRuleSpec,
    #[serde(default)]
    pub grafana_dashboards: GrafanaDashboardsSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, e.g. `15s`.
    #[serde(default = "default_interval")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: String,
    /// Extra labels, e.g. the `release` label your Prometheus selects on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            interval: default_interval(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_interval() -> String {
    "15s".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRuleSpec {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrafanaDashboardsSpec {
    #[serde(default)]
    pub enabled: bool,
    /// Labels the Grafana dashboard sidecar selects on (default `grafana_dashboard: "1"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Maintenance switches. Paused wins over stopped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperation {
    /// Apply nothing, start no operation; status is still reported.
    #[serde(default)]
    pub reconciliation_paused: bool,
    /// Scale every workload to zero and keep the volumes (and so the data).
    #[serde(default)]
    pub stopped: bool,
}

/// What happens to Raft members' volumes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// When the ParsecCluster is deleted. Default Retain: the data outlives the resource.
    #[serde(default = "retain")]
    pub when_deleted: RetentionPolicy,
    /// When a member is removed by scaling in. Default Delete: a removed member's log is never
    /// reused by a later member with the same node id.
    #[serde(default = "delete")]
    pub when_scaled: RetentionPolicy,
}

impl Default for PvcRetention {
    fn default() -> Self {
        Self {
            when_deleted: retain(),
            when_scaled: delete(),
        }
    }
}

fn retain() -> RetentionPolicy {
    RetentionPolicy::Retain
}

fn delete() -> RetentionPolicy {
    RetentionPolicy::Delete
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Retain => "Retain",
            RetentionPolicy::Delete => "Delete",
        }
    }
}

/// Where the cluster's certificate comes from: exactly one of an existing Secret or cert-manager.
/// Every component presents the same certificate, as server and as client, and trusts only its
/// `ca.crt`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.certManager)")
    .message("tls needs exactly one source: secretName (an existing Secret) or certManager (an issuer)"))]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret in the cluster's namespace with `ca.crt`, `tls.crt` and `tls.key` (the
    /// kubernetes.io/tls layout plus the CA, as cert-manager writes it). The certificate must
    /// name every member's address (see the operator's README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
    /// Have cert-manager issue the certificate: the operator applies a Certificate whose Secret
    /// is `<name>-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerSpec>,
}

/// A cert-manager `Certificate` for the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.duration) || !has(self.renewBefore) || duration(self.renewBefore) < duration(self.duration)")
    .message("certManager.renewBefore must be shorter than certManager.duration"))]
#[serde(rename_all = "camelCase")]
pub struct CertManagerSpec {
    /// The issuer that signs the certificate. It must write `ca.crt` into the Secret (CA and
    /// Vault issuers do; ACME issuers do not and cannot be used here).
    pub issuer_ref: IssuerRef,
    /// Lifetime of each certificate, a Go duration such as `2160h` (cert-manager's default:
    /// 90 days; at least 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1h')").message("certManager.duration must be at least 1h"))]
    pub duration: Option<String>,
    /// How long before expiry cert-manager renews it (default: a third of the lifetime). Every
    /// renewal rolls the cluster's pods, one member at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub renew_before: Option<String>,
}

/// cert-manager's reference to an issuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default)]
    pub kind: IssuerKind,
    #[serde(default = "cert_manager_group")]
    #[schemars(length(min = 1))]
    pub group: String,
}

fn cert_manager_group() -> String {
    "cert-manager.io".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum IssuerKind {
    /// An Issuer in the cluster's namespace.
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerKind::Issuer => "Issuer",
            IssuerKind::ClusterIssuer => "ClusterIssuer",
        }
    }
}

impl TlsSpec {
    /// The Secret holding the cluster's certificate: the one named, or the one cert-manager
    /// writes for the operator's Certificate.
    pub fn secret(&self, cluster: &str) -> String {
        match &self.secret_name {
            Some(name) => name.clone(),
            None => crate::naming::tls_secret(cluster),
        }
    }
}

/// NetworkPolicies that admit only the traffic the cluster needs (see the operator's README).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    #[serde(default)]
    pub enabled: bool,
    /// Who may reach the agents' JSON-RPC and gRPC ports. Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<NetworkPolicyPeer>,
    /// Who may reach every pod's metrics port (Prometheus). Empty: anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<NetworkPolicyPeer>,
}
