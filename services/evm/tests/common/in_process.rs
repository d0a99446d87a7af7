//! The agent's chain in one process: real shard engines and lock tables, the broker's commit
//! protocol, the ticket machine's block clock and sealer, the EVM over locked keys.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use alloy_primitives::{Address, U256};
use parsec_agent::agent::{Agent, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_broker::{Broker, BrokerSettings, LocalShard, ShardTransport};
use parsec_core::{AgentId, Settings, ShardId};
use parsec_evm::chain::Block;
use parsec_evm::{AgentChain, Chain, ChainSettings};
use parsec_ticketer::{ClockSettings, TicketDispenser, TicketMachineService};

pub const WAIT: Duration = Duration::from_secs(30);

/// An agent's chain over `shards` in-memory shards, ready to take transactions, with `funded`
/// accounts holding `balance` wei.
pub async fn chain(
    shards: u32,
    settings: ChainSettings,
    funded: &[Address],
    balance: U256,
) -> Arc<AgentChain> {
    let core = Settings::default();
    let lease = Duration::from_millis(400);
    let transports: Vec<Arc<dyn ShardTransport>> = (0..shards)
        .map(|i| {
            let engine = parsec_shard::ShardEngine::with_lease(ShardId(i), lease);
            let service = parsec_shard::ShardService::new(engine, Duration::from_secs(5));
            Arc::new(LocalShard(service)) as _
        })
        .collect();
    let clock = ClockSettings {
        interval: Duration::from_millis(50),
        lease,
    };
    let ticket_machine = TicketMachineService::new(clock);
    ticket_machine.spawn_sealer();
    let dispenser = TicketDispenser::new(
        Arc::new(ticket_machine.clone()),
        core.ticket_range_size,
        Duration::from_millis(core.ticket_range_max_age_ms),
    );
    let broker = Broker::new(
        AgentId(7),
        transports,
        dispenser,
        BrokerSettings::from(&core),
    );
    let agent = Agent::new(
        broker,
        Arc::new(LuaRunner::from_settings(&core)),
        AgentSettings::from(&core),
    );
    let chain = AgentChain::start(agent, 7, Arc::new(ticket_machine), lease, settings);
    chain.wait_ready(WAIT).await.expect("block clock");
    if !funded.is_empty() {
        chain.fund(funded, balance).await.expect("fund");
    }
    chain
}

/// Waits (by block notifications, bounded) until every hash in `hashes` is in a sealed block.
pub async fn sealed(chain: &AgentChain, hashes: &[B256]) -> Vec<Arc<Block>> {
    let mut blocks = chain.subscribe_blocks();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut found = Vec::new();
        for hash in hashes {
            match chain.transaction(*hash).await.expect("lookup") {
                Some(lookup) => found.push(lookup.block),
                None => break,
            }
        }
        if found.len() == hashes.len() {
            return found;
        }
        tokio::time::timeout_at(deadline, blocks.recv())
            .await
            .expect("transactions sealed in time")
            .expect("block feed");
    }
}
