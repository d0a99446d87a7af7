//! The topology every process reads: `parsec_core::ClusterConfig`, the same type the services
//! parse, rendered from the spec. Node id = StatefulSet ordinal.

use parsec_core::config::{RaftGroup, Replica, ShardGroup};
use parsec_core::{ClusterConfig, NodeId, Settings, ShardId};
use sha2::{Digest, Sha256};

use super::{BuildError, GroupSizes, spec_replicas};
use crate::naming::Group;
use crate::validate::ValidatedCluster;

/// Renders and validates the topology. Agents are not listed: they are a Deployment and name
/// themselves with `--name $(POD_NAME)`. With TLS, `tls` names the mounted certificate files.
pub fn cluster_config(
    cluster: &ValidatedCluster,
    sizes: &GroupSizes,
) -> Result<ClusterConfig, BuildError> {
    let members = |group: Group| -> Vec<Replica> {
        let count = sizes
            .get(&group)
            .map(|s| s.members)
            .unwrap_or_else(|| spec_replicas(cluster, group))
            .max(1);
        (0..count as u64)
            .map(|ordinal| Replica {
                node_id: NodeId(ordinal),
                address: group.address(&cluster.name, &cluster.namespace, ordinal),
            })
            .collect()
    };
    let limits = &cluster.spec.agents.rpc_limits;
    let config = ClusterConfig {
        name: cluster.name.clone(),
        shards: (0..cluster.spec.shards.count)
            .map(|i| ShardGroup {
                id: ShardId(i),
                replicas: members(Group::Shard(i)),
            })
            .collect(),
        ticket_machine: RaftGroup {
            replicas: members(Group::TicketMachine),
        },
        agents: Vec::new(),
        settings: Settings {
            block_interval_ms: cluster.spec.chain.block_interval_ms,
            rpc_rate_limit_per_second: limits.requests_per_second.unwrap_or(0),
            rpc_rate_limit_burst: limits.burst.unwrap_or(0),
            rpc_max_connections_per_client: limits.max_connections_per_client.unwrap_or(0),
            ..Settings::default()
        },
        // Every process finds the certificate where the pod mounts the Secret.
        tls: cluster.spec.tls.as_ref().map(|_| super::pod::tls_files()),
    };
    config.validate().map_err(BuildError::Topology)?;
    Ok(config)
}

pub fn to_yaml(config: &ClusterConfig) -> Result<String, BuildError> {
    config.to_yaml().map_err(BuildError::Topology)
}

/// Hashes put on pod templates so that a configuration change rolls the pods that use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigHashes {
    /// Raft members: the settings and the chain, not the member lists. Membership lives in the
    /// Raft log and changes through the admin API; restarting every member because one was
    /// added would be needless disruption.
    pub raft: String,
    /// Agents: the whole topology and the chain (agents route by the member lists).
    pub agents: String,
}

impl ConfigHashes {
    pub fn of(cluster: &ValidatedCluster, config: &ClusterConfig) -> Result<Self, BuildError> {
        let chain =
            serde_json::to_string(&cluster.spec.chain).map_err(|source| BuildError::Serialize {
                what: "chain settings",
                source,
            })?;
        // The JSON-RPC limits concern agents alone: changing them must not roll Raft members.
        let member_settings = Settings {
            rpc_rate_limit_per_second: 0,
            rpc_rate_limit_burst: 0,
            rpc_max_connections_per_client: 0,
            ..config.settings.clone()
        };
        let settings =
            serde_json::to_string(&member_settings).map_err(|source| BuildError::Serialize {
                what: "settings",
                source,
            })?;
        Ok(ConfigHashes {
            raft: hash(&[&settings, &chain]),
            agents: hash(&[&to_yaml(config)?, &chain]),
        })
    }
}

/// First 16 hex digits of the SHA-256 of the parts.
pub fn hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::build::{GroupSize, spec_sizes};
    use crate::test_support::validated;

    #[test]
    fn the_topology_round_trips_through_the_services_parser() {
        let cluster = validated("shards: {count: 2, replicas: 3}\nticketMachine: {replicas: 1}");
        let config = cluster_config(&cluster, &spec_sizes(&cluster)).unwrap();
        let parsed = ClusterConfig::from_yaml(&to_yaml(&config).unwrap()).unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.shards.len(), 2);
        assert_eq!(parsed.shards[1].replicas.len(), 3);
        assert_eq!(parsed.shards[1].replicas[2].node_id, NodeId(2));
        assert_eq!(
            parsed.shards[1].replicas[2].address,
            "demo-shard-1-2.demo-shard-1.ns.svc:7100"
        );
        assert_eq!(parsed.ticket_machine.replicas.len(), 1);
        assert!(parsed.agents.is_empty());
        assert_eq!(parsed.tls, None, "plain gRPC unless spec.tls asks");
    }

    #[test]
    fn with_tls_every_process_reads_the_mounted_certificate() {
        let cluster = validated("shards: {count: 1}\ntls: {secretName: certs}");
        let config = cluster_config(&cluster, &spec_sizes(&cluster)).unwrap();
        let parsed = ClusterConfig::from_yaml(&to_yaml(&config).unwrap()).unwrap();
        let tls = parsed.tls.unwrap();
        assert_eq!(tls.ca_file.to_str(), Some("/etc/parsec/tls/ca.crt"));
        assert_eq!(tls.cert_file.to_str(), Some("/etc/parsec/tls/tls.crt"));
        assert_eq!(tls.key_file.to_str(), Some("/etc/parsec/tls/tls.key"));
    }

    #[test]
    fn membership_changes_roll_agents_but_not_raft_members() {
        let cluster = validated("shards: {count: 1, replicas: 3}");
        let mut sizes = spec_sizes(&cluster);
        let before =
            ConfigHashes::of(&cluster, &cluster_config(&cluster, &sizes).unwrap()).unwrap();
        sizes.insert(
            Group::Shard(0),
            GroupSize {
                members: 4,
                replicas: 4,
            },
        );
        let after = ConfigHashes::of(&cluster, &cluster_config(&cluster, &sizes).unwrap()).unwrap();
        assert_eq!(before.raft, after.raft);
        assert_ne!(before.agents, after.agents);

        let mut chain_changed = cluster.clone();
        chain_changed.spec.chain.chain_id = 1;
        let changed = ConfigHashes::of(
            &chain_changed,
            &cluster_config(&chain_changed, &sizes).unwrap(),
        )
        .unwrap();
        assert_ne!(changed.raft, after.raft);
    }

    #[test]
    fn rpc_limits_reach_the_agents_and_roll_only_them() {
        let plain = validated("shards: {count: 1}");
        let limited = validated(
            "shards: {count: 1}\nagents: {rpcLimits: {requestsPerSecond: 50, burst: 100, \
             maxConnectionsPerClient: 8}}",
        );
        let sizes = spec_sizes(&plain);
        let config = cluster_config(&limited, &sizes).unwrap();
        let parsed = ClusterConfig::from_yaml(&to_yaml(&config).unwrap()).unwrap();
        assert_eq!(parsed.settings.rpc_rate_limit_per_second, 50);
        assert_eq!(parsed.settings.rpc_rate_limit_burst, 100);
        assert_eq!(parsed.settings.rpc_max_connections_per_client, 8);
        let off = cluster_config(&plain, &sizes).unwrap();
        assert_eq!(
            off.settings.rpc_rate_limit_per_second, 0,
            "no limit unless asked"
        );

        let before = ConfigHashes::of(&plain, &off).unwrap();
        let after = ConfigHashes::of(&limited, &config).unwrap();
        assert_eq!(
            before.raft, after.raft,
            "Raft members do not serve JSON-RPC"
        );
        assert_ne!(before.agents, after.agents);
    }
}
