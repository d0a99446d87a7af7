//! Every role of `parsec dev --in-memory` in this process, wired as `services/cli/src/node.rs`
//! wires them: in-memory shards behind their gRPC services (reached in process), the ticket
//! machine and its block sealer, and an agent with the Lua runner. The JSON-RPC target adds the
//! agent's chain on top.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parsec_agent::agent::{Agent, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_broker::{Broker, BrokerSettings, LocalShard, ShardPeers, ShardTransport};
use parsec_core::{AgentId, Settings, ShardId};
use parsec_shard::{ShardEngine, ShardService};
use parsec_ticketer::{ClockSettings, TicketDispenser, TicketMachineService};

use crate::seeds::LUA_CONTRACTS;

pub const SHARDS: u32 = 2;
/// The in-process agent's id.
pub const AGENT: AgentId = AgentId(0);

/// Where the shipped contract `name` (`pay`, `mint`, …) is deployed.
pub fn contract_key(name: &str) -> Bytes {
    Bytes::from(format!("contracts/{name}"))
}

pub struct Cluster {
    pub settings: Settings,
    pub shards: Vec<ShardService>,
    pub ticket_machine: TicketMachineService,
    pub agent: Arc<Agent>,
}

pub fn lease(settings: &Settings) -> Duration {
    Duration::from_millis(settings.agent_lease_ms)
}

impl Cluster {
    /// Starts the roles; `recovery` also starts lease expiry and recovery of dead agents'
    /// tickets on every shard, and the agent's heartbeats (as `parsec dev` does).
    pub async fn start(settings: Settings, recovery: bool) -> Self {
        let shards: Vec<ShardService> = (0..SHARDS)
            .map(|i| {
                let engine = ShardEngine::with_lease(ShardId(i), lease(&settings));
                ShardService::new(engine, Duration::from_millis(settings.lock_wait_timeout_ms))
            })
            .collect();
        let transports: Vec<Arc<dyn ShardTransport>> = shards
            .iter()
            .map(|service| Arc::new(LocalShard(service.clone())) as _)
            .collect();
        if recovery {
            for service in &shards {
                let peers = ShardPeers::new(
                    transports.clone(),
                    Duration::from_millis(settings.rpc_timeout_ms),
                );
                parsec_shard::recovery::spawn_recovery(
                    service.engine().clone(),
                    Arc::new(peers),
                    lease(&settings) / 4,
                );
            }
        }
        let ticket_machine = TicketMachineService::new(ClockSettings {
            interval: Duration::from_millis(settings.block_interval_ms.max(1)),
            lease: lease(&settings),
        });
        ticket_machine.spawn_sealer();
        let dispenser = TicketDispenser::new(
            Arc::new(ticket_machine.clone()),
            settings.ticket_range_size,
            Duration::from_millis(settings.ticket_range_max_age_ms),
        );
        let broker = Broker::new(
            AGENT,
            transports,
            dispenser,
            BrokerSettings::from(&settings),
        );
        let runner = Arc::new(LuaRunner::from_settings(&settings));
        let agent = Agent::new(broker, runner, AgentSettings::from(&settings));
        if recovery {
            agent.broker().heartbeat(1, lease(&settings)).await;
            agent.broker().spawn_heartbeats(1, lease(&settings));
        }
        let cluster = Self {
            settings,
            shards,
            ticket_machine,
            agent,
        };
        cluster.deploy_contracts().await;
        cluster
    }

    /// (Re)deploys the shipped contracts under [`contract_key`]s.
    pub async fn deploy_contracts(&self) {
        for (name, source) in LUA_CONTRACTS {
            self.agent
                .deploy(contract_key(name), Bytes::from_static(source.as_bytes()))
                .await
                .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
        }
    }
}
