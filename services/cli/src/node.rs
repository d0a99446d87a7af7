//! Wiring of each role: what `parsec shard | ticketer | agent | dev` start.

use parsec_agent::agent::{Agent, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_agent::service::AgentService;
use parsec_broker::{Broker, BrokerSettings, GrpcShard, LocalShard, ShardTransport};
use parsec_core::config::Replica;
use parsec_core::{AgentId, ClusterConfig, NodeId, Settings, ShardId};
use parsec_shard::{ShardEngine, ShardService};
use parsec_ticketer::{GrpcTicketMachine, RangeSource, TicketDispenser, TicketMachineService};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Topology(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{0}")]
    Connect(String),
}

/// Where to listen for a `host:port` from the topology: the address itself when it is an IP,
/// all interfaces on its port otherwise (a Kubernetes pod name resolves to the pod, not to an
/// interface we can bind).
pub fn listen_address(address: &str) -> Result<SocketAddr, NodeError> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Ok(socket);
    }
    let port = address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .ok_or_else(|| NodeError::Topology(format!("address {address:?} is not host:port")))?;
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// Serves `router` on `address` until SIGINT or SIGTERM.
async fn serve(address: SocketAddr, router: Router) -> Result<(), NodeError> {
    // `Server::tcp_nodelay` does not apply to a listener we bind ourselves: set it on the
    // incoming stream, or small replies wait for delayed ACKs (~40 ms).
    let incoming = TcpIncoming::bind(address)
        .map_err(|source| NodeError::Listen {
            address: address.to_string(),
            source,
        })?
        .with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown_signal())
        .await?;
    Ok(())
}

/// The address to listen on: `--listen` if given, else the one the topology names.
fn listen_or(listen: Option<SocketAddr>, topology_address: &str) -> Result<SocketAddr, NodeError> {
    match listen {
        Some(address) => Ok(address),
        None => listen_address(topology_address),
    }
}

fn replica(replicas: &[Replica], node: NodeId, group: &str) -> Result<Replica, NodeError> {
    replicas
        .iter()
        .find(|r| r.node_id == node)
        .cloned()
        .ok_or_else(|| NodeError::Topology(format!("{group} has no replica {node}")))
}

fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32_768)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}

fn shard_service(id: ShardId, settings: &Settings) -> ShardService {
    ShardService::new(
        ShardEngine::new(id),
        Duration::from_millis(settings.lock_wait_timeout_ms),
    )
}

/// Serves shard `shard` replica `node` of the topology.
pub async fn run_shard(
    config: &ClusterConfig,
    shard: ShardId,
    node: NodeId,
    listen: Option<SocketAddr>,
) -> Result<(), NodeError> {
    let group = config
        .shard(shard)
        .ok_or_else(|| NodeError::Topology(format!("the topology has no {shard}")))?;
    let address = listen_or(
        listen,
        &replica(&group.replicas, node, &shard.to_string())?.address,
    )?;
    tracing::info!(%shard, %node, %address, "shard serving");
    let service = shard_service(shard, &config.settings).into_server();
    serve(address, server().add_service(service)).await
}

/// Serves ticket machine replica `node`.
pub async fn run_ticketer(
    config: &ClusterConfig,
    node: NodeId,
    listen: Option<SocketAddr>,
) -> Result<(), NodeError> {
    let replica = replica(&config.ticket_machine.replicas, node, "the ticket machine")?;
    let address = listen_or(listen, &replica.address)?;
    tracing::info!(%node, %address, "ticket machine serving");
    serve(
        address,
        server().add_service(TicketMachineService::new().into_server()),
    )
    .await
}

fn build_agent(
    id: AgentId,
    shards: Vec<Arc<dyn ShardTransport>>,
    tickets: Arc<dyn RangeSource>,
    settings: &Settings,
) -> Arc<Agent> {
    let dispenser = TicketDispenser::new(
        tickets,
        settings.ticket_range_size,
        Duration::from_millis(settings.ticket_range_max_age_ms),
    );
    let broker = Broker::new(id, shards, dispenser, BrokerSettings::from(settings));
    let runner = Arc::new(LuaRunner::from_settings(settings));
    Agent::new(broker, runner, AgentSettings::from(settings))
}

/// Serves agent `id`, reaching the shards and the ticket machine over gRPC.
pub async fn run_agent(
    config: &ClusterConfig,
    id: AgentId,
    listen: Option<SocketAddr>,
) -> Result<(), NodeError> {
    let endpoint = config
        .agent(id)
        .ok_or_else(|| NodeError::Topology(format!("the topology has no {id}")))?;
    let timeout = Duration::from_millis(config.settings.rpc_timeout_ms);
    let mut shards: Vec<Arc<dyn ShardTransport>> = Vec::new();
    for group in &config.shards {
        // Replication (and leader discovery) arrives with Raft; until then a shard has one replica.
        let replica = &group.replicas[0];
        let shard = GrpcShard::new(&replica.address, timeout)
            .map_err(|e| NodeError::Connect(e.to_string()))?;
        shards.push(Arc::new(shard));
    }
    let tickets = GrpcTicketMachine::new(&config.ticket_machine.replicas[0].address, timeout)
        .map_err(|e| NodeError::Connect(e.to_string()))?;
    let agent = build_agent(id, shards, Arc::new(tickets), &config.settings);
    let address = listen_or(listen, &endpoint.address)?;
    tracing::info!(agent = %id, %address, "agent serving");
    serve(
        address,
        server().add_service(AgentService::new(agent).into_server()),
    )
    .await
}

/// `parsec dev`: every role in this process, connected in process, one agent served on `listen`.
pub async fn run_dev(listen: SocketAddr, shard_count: u32) -> Result<(), NodeError> {
    let settings = Settings::default();
    let shards: Vec<Arc<dyn ShardTransport>> = (0..shard_count)
        .map(|i| Arc::new(LocalShard(shard_service(ShardId(i), &settings))) as _)
        .collect();
    let agent = build_agent(
        AgentId(0),
        shards,
        Arc::new(TicketMachineService::new()),
        &settings,
    );
    let router = server().add_service(AgentService::new(agent).into_server());
    println!("parsec dev: {shard_count} shards, ticket machine and agent in one process");
    println!("  agent (Lua contracts, gRPC): {listen}");
    println!("  try: parsec bench lua-pay --duration 10");
    serve(listen, router).await
}
