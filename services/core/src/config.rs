//! The cluster topology: one serde type that the operator renders into a ConfigMap and every
//! service parses at start. A field added here exists on both sides.

use crate::{AgentId, NodeId, ShardId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read topology file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write topology file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topology is not valid YAML for a ClusterConfig: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("invalid topology: {0}")]
    Invalid(String),
}

/// The whole topology of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Shard `i` is `shards[i]`; its `id` must equal its index.
    pub shards: Vec<ShardGroup>,
    /// The ticket machine's replicas.
    pub ticket_machine: RaftGroup,
    /// Agents that serve clients.
    pub agents: Vec<AgentEndpoint>,
    #[serde(default)]
    pub settings: Settings,
    /// Mutual TLS between every component when present: each gRPC server (shards, ticket
    /// machine, agents, Raft and its admin API) requires a client certificate signed by the CA,
    /// and each client presents one and checks the server's against the CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

/// Where a process finds its TLS identity and the cluster's CA (PEM files; the layout of a
/// `kubernetes.io/tls` Secret with `ca.crt`, as cert-manager writes it). One process may
/// override the certificate and key on its command line (local clusters give each process its
/// own); the CA is the cluster's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA that signs every component's certificate.
    pub ca_file: PathBuf,
    /// This process's certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// This process's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShardGroup {
    pub id: ShardId,
    pub replicas: Vec<Replica>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RaftGroup {
    pub replicas: Vec<Replica>,
}

/// One replica of a Raft group, with an explicit node id and address (never derived from a port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replica {
    pub node_id: NodeId,
    /// `host:port` of its gRPC endpoint. A DNS name is allowed (Kubernetes pod names).
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentEndpoint {
    pub id: AgentId,
    /// `host:port` of the agent's gRPC endpoint (Lua calls).
    pub address: String,
    /// `host:port` of its Ethereum JSON-RPC endpoint, when it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_address: Option<String>,
}

/// Tunables shared by every process. Defaults suit a single machine and a LAN alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Deadline of one shard or ticket-machine RPC that does not wait for locks.
    pub rpc_timeout_ms: u64,
    /// How long a lock request may wait in a queue before the transaction gives up and retries.
    pub lock_wait_timeout_ms: u64,
    /// Tickets a broker takes from the ticket machine at once.
    pub ticket_range_size: u64,
    /// A ticket range older than this is dropped unused, so tickets stay roughly age-ordered
    /// across agents whatever their load.
    pub ticket_range_max_age_ms: u64,
    /// First retry backoff of a wounded transaction; doubled on each retry, with jitter.
    pub retry_backoff_min_ms: u64,
    /// Upper bound of the retry backoff.
    pub retry_backoff_max_ms: u64,
    /// A transaction that has not committed after this long is failed back to the client.
    pub transaction_timeout_ms: u64,
    /// An agent's lease: when a shard hears nothing from an agent for this long, it rolls back
    /// the agent's unprepared tickets and resolves its prepared ones. Agents renew it every third.
    pub agent_lease_ms: u64,
    /// Lua: VM instructions one call may execute.
    pub lua_instruction_budget: u64,
    /// Lua: bytes one call may allocate beyond the VM's baseline.
    pub lua_memory_limit_bytes: usize,
    /// Raft: a replica snapshots its state after this many log entries, which bounds its restart
    /// time and its log on disk.
    pub raft_snapshot_every: u64,
    /// Raft: entries kept behind a snapshot, so that a briefly lagging follower catches up from
    /// the log instead of a snapshot install.
    pub raft_logs_kept: u64,
    /// Length of a logical block (DESIGN.md §4): the JSON-RPC block number advances this often.
    pub block_interval_ms: u64,
    /// JSON-RPC: calls per second one client (IP address; IPv6: its /64) may make; 0 = no
    /// limit. Off by default: behind a load balancer every client has the balancer's address.
    #[serde(skip_serializing_if = "is_zero")]
    pub rpc_rate_limit_per_second: u32,
    /// JSON-RPC: calls a client may make at once after being idle (0 = the per-second rate).
    #[serde(skip_serializing_if = "is_zero")]
    pub rpc_rate_limit_burst: u32,
    /// JSON-RPC: TCP connections one client may hold; 0 = no limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub rpc_max_connections_per_client: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            rpc_timeout_ms: 5_000,
            lock_wait_timeout_ms: 10_000,
            ticket_range_size: 1_024,
            ticket_range_max_age_ms: 50,
            retry_backoff_min_ms: 1,
            retry_backoff_max_ms: 100,
            transaction_timeout_ms: 60_000,
            agent_lease_ms: 3_000,
            lua_instruction_budget: 1_000_000,
            lua_memory_limit_bytes: 16 << 20,
            raft_snapshot_every: 10_000,
            raft_logs_kept: 5_000,
            block_interval_ms: 200,
            rpc_rate_limit_per_second: 0,
            rpc_rate_limit_burst: 0,
            rpc_max_connections_per_client: 0,
        }
    }
}

impl ClusterConfig {
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: ClusterConfig = serde_yaml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        Ok(serde_yaml::to_string(self)?)
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_yaml()?;
        std::fs::write(path, text).map_err(|source| ConfigError::Write {
            path: path.to_owned(),
            source,
        })
    }

    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    pub fn shard(&self, id: ShardId) -> Option<&ShardGroup> {
        self.shards.get(id.0 as usize)
    }

    pub fn agent(&self, id: AgentId) -> Option<&AgentEndpoint> {
        self.agents.iter().find(|agent| agent.id == id)
    }

    /// Checks what serde cannot: ids, uniqueness, addresses and settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.shards.is_empty() {
            return invalid("at least one shard is required".into());
        }
        for (index, shard) in self.shards.iter().enumerate() {
            if shard.id.0 as usize != index {
                return invalid(format!(
                    "shards must be listed in id order 0..n: position {index} holds {}",
                    shard.id
                ));
            }
            validate_group(&format!("{}", shard.id), &shard.replicas)?;
        }
        validate_group("ticketMachine", &self.ticket_machine.replicas)?;
        let mut agent_ids = HashSet::new();
        for agent in &self.agents {
            if !agent_ids.insert(agent.id) {
                return invalid(format!("{} is listed twice", agent.id));
            }
            validate_address(&format!("{}", agent.id), &agent.address)?;
        }
        let s = &self.settings;
        if s.rpc_timeout_ms == 0 || s.lock_wait_timeout_ms == 0 || s.transaction_timeout_ms == 0 {
            return invalid("timeouts must be positive".into());
        }
        if s.agent_lease_ms < 30 {
            return invalid("agentLeaseMs must be at least 30 ms".into());
        }
        if s.ticket_range_size == 0 {
            return invalid("ticketRangeSize must be positive".into());
        }
        if s.retry_backoff_min_ms > s.retry_backoff_max_ms {
            return invalid("retryBackoffMinMs must not exceed retryBackoffMaxMs".into());
        }
        if s.lua_instruction_budget == 0 || s.lua_memory_limit_bytes == 0 {
            return invalid("Lua budgets must be positive".into());
        }
        if s.raft_snapshot_every == 0 {
            return invalid("raftSnapshotEvery must be positive".into());
        }
        Ok(())
    }
}

/// Limits that are off stay out of the serialized topology, so that adding one changes the
/// topology (and the config hashes that roll pods) only where it is used.
fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn validate_group(name: &str, replicas: &[Replica]) -> Result<(), ConfigError> {
    if replicas.is_empty() {
        return Err(ConfigError::Invalid(format!("{name} has no replicas")));
    }
    let mut ids = HashSet::new();
    for replica in replicas {
        if !ids.insert(replica.node_id) {
            return Err(ConfigError::Invalid(format!(
                "{name} lists {} twice",
                replica.node_id
            )));
        }
        validate_address(&format!("{name}/{}", replica.node_id), &replica.address)?;
    }
    Ok(())
}

fn validate_address(owner: &str, address: &str) -> Result<(), ConfigError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{owner}: address {address:?} is not host:port"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterConfig {
        ClusterConfig {
            name: "test".into(),
            shards: (0..2)
                .map(|i| ShardGroup {
                    id: ShardId(i),
                    replicas: vec![Replica {
                        node_id: NodeId(1),
                        address: format!("127.0.0.1:{}", 7000 + i),
                    }],
                })
                .collect(),
            ticket_machine: RaftGroup {
                replicas: vec![Replica {
                    node_id: NodeId(1),
                    address: "ticketer-0.parsec:7100".into(),
                }],
            },
            agents: vec![AgentEndpoint {
                id: AgentId(0),
                address: "127.0.0.1:7200".into(),
                rpc_address: None,
            }],
            settings: Settings::default(),
            tls: None,
        }
    }

    #[test]
    fn yaml_round_trip() {
        let config = sample();
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("ticketMachine"), "{yaml}");
        assert_eq!(ClusterConfig::from_yaml(&yaml).unwrap(), config);
    }

    #[test]
    fn tls_files_round_trip() {
        let mut config = sample();
        config.tls = Some(TlsFiles {
            ca_file: "/etc/parsec/tls/ca.crt".into(),
            cert_file: "/etc/parsec/tls/tls.crt".into(),
            key_file: "/etc/parsec/tls/tls.key".into(),
        });
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("caFile: /etc/parsec/tls/ca.crt"), "{yaml}");
        assert_eq!(ClusterConfig::from_yaml(&yaml).unwrap(), config);
        assert!(!sample().to_yaml().unwrap().contains("tls"));
    }

    #[test]
    fn settings_default_when_absent() {
        let yaml = "name: x\nshards: [{id: 0, replicas: [{nodeId: 1, address: 'a:1'}]}]\n\
                    ticketMachine: {replicas: [{nodeId: 1, address: 'b:2'}]}\nagents: []\n";
        let config = ClusterConfig::from_yaml(yaml).unwrap();
        assert_eq!(config.settings, Settings::default());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let yaml = sample().to_yaml().unwrap() + "colour: blue\n";
        assert!(matches!(
            ClusterConfig::from_yaml(&yaml),
            Err(ConfigError::Parse(_))
        ));
    }

    #[test]
    fn invalid_topologies_are_rejected_with_a_reason() {
        let mut c = sample();
        c.shards[1].id = ShardId(5);
        assert!(c.validate().unwrap_err().to_string().contains("id order"));

        let mut c = sample();
        let twin = c.shards[0].replicas[0].clone();
        c.shards[0].replicas.push(twin);
        assert!(c.validate().unwrap_err().to_string().contains("twice"));

        let mut c = sample();
        c.agents[0].address = "nohost".into();
        assert!(c.validate().unwrap_err().to_string().contains("host:port"));

        let mut c = sample();
        c.shards.clear();
        assert!(c.validate().is_err());

        let mut c = sample();
        c.settings.retry_backoff_min_ms = 1000;
        assert!(c.validate().is_err());
    }
}
