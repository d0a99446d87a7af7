//! Wiring of each role: what `parsec shard | ticketer | agent | dev` start.

use openraft::BasicNode;
use parsec_agent::agent::{Agent, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_agent::service::AgentService;
use parsec_broker::{Broker, BrokerSettings, GrpcShard, LocalShard, ShardPeers, ShardTransport};
use parsec_core::config::Replica;
use parsec_core::{AgentId, ClusterConfig, NodeId, Settings, ShardId};
use parsec_raft::{RaftConfig, RaftNode};
use parsec_shard::{ShardEngine, ShardService};
use parsec_ticketer::TicketMachine;
use parsec_ticketer::{GrpcTicketMachine, RangeSource, TicketDispenser, TicketMachineService};
use std::net::SocketAddr;
use std::path::Path;
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
    #[error("raft: {0}")]
    Raft(String),
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
        ShardEngine::with_lease(id, lease(settings)),
        Duration::from_millis(settings.lock_wait_timeout_ms),
    )
}

fn lease(settings: &Settings) -> Duration {
    Duration::from_millis(settings.agent_lease_ms)
}

/// Transports to every shard of the topology (its first replica until Raft).
fn grpc_shards(config: &ClusterConfig) -> Result<Vec<Arc<dyn ShardTransport>>, NodeError> {
    let timeout = Duration::from_millis(config.settings.rpc_timeout_ms);
    config
        .shards
        .iter()
        .map(|group| {
            let shard = GrpcShard::new(&group.replicas[0].address, timeout)
                .map_err(|e| NodeError::Connect(e.to_string()))?;
            Ok(Arc::new(shard) as Arc<dyn ShardTransport>)
        })
        .collect()
}

/// Lease expiry and recovery of dead agents' tickets, every quarter lease.
fn start_recovery(engine: &ShardEngine, peers: Vec<Arc<dyn ShardTransport>>, settings: &Settings) {
    let peers = ShardPeers::new(peers, Duration::from_millis(settings.rpc_timeout_ms));
    parsec_shard::recovery::spawn_recovery(engine.clone(), Arc::new(peers), lease(settings) / 4);
}

/// Starts renewing the agent's lease: one round now, so that shards know this incarnation
/// before it sends anything, then every third of the lease.
async fn start_heartbeats(agent: &Agent, settings: &Settings) {
    // Unique per process start: a restarted agent is a new incarnation.
    let incarnation = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        .max(1);
    let broker = agent.broker();
    broker.heartbeat(incarnation, lease(settings)).await;
    broker.spawn_heartbeats(incarnation, lease(settings));
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
    let service = shard_service(shard, &config.settings);
    start_recovery(service.engine(), grpc_shards(config)?, &config.settings);
    serve(address, server().add_service(service.into_server())).await
}

/// Serves ticket machine replica `node`, replicated with Raft; its log and snapshots live in
/// `data_dir`. The replica with the lowest node id initializes the group on first boot.
pub async fn run_ticketer(
    config: &ClusterConfig,
    node: NodeId,
    data_dir: &Path,
    listen: Option<SocketAddr>,
) -> Result<(), NodeError> {
    let replicas = &config.ticket_machine.replicas;
    let replica = replica(replicas, node, "the ticket machine")?;
    let address = listen_or(listen, &replica.address)?;
    let raft = RaftNode::start(
        node.0,
        data_dir,
        TicketMachine::new(),
        RaftConfig::default(),
    )
    .await
    .map_err(|e| NodeError::Raft(e.to_string()))?;
    let raft = Arc::new(raft);
    if replicas.iter().map(|r| r.node_id).min() == Some(node) {
        let members = replicas
            .iter()
            .map(|r| (r.node_id.0, BasicNode::new(&r.address)))
            .collect();
        raft.initialize(members)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
    }
    tracing::info!(%node, %address, data_dir = %data_dir.display(), "ticket machine serving");
    let router = server()
        .add_routes(raft.routes())
        .add_service(TicketMachineService::replicated(raft.clone()).into_server());
    let served = serve(address, router).await;
    // Close the log cleanly before the process exits.
    raft.shutdown().await;
    served
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
    let shards = grpc_shards(config)?;
    let ticket_machine: Vec<String> = config
        .ticket_machine
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let tickets = GrpcTicketMachine::new(&ticket_machine, timeout)
        .map_err(|e| NodeError::Connect(e.to_string()))?;
    let agent = build_agent(id, shards, Arc::new(tickets), &config.settings);
    start_heartbeats(&agent, &config.settings).await;
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
    let services: Vec<ShardService> = (0..shard_count)
        .map(|i| shard_service(ShardId(i), &settings))
        .collect();
    let shards: Vec<Arc<dyn ShardTransport>> = services
        .iter()
        .map(|service| Arc::new(LocalShard(service.clone())) as _)
        .collect();
    for service in &services {
        start_recovery(service.engine(), shards.clone(), &settings);
    }
    let agent = build_agent(
        AgentId(0),
        shards,
        Arc::new(TicketMachineService::new()),
        &settings,
    );
    start_heartbeats(&agent, &settings).await;
    let router = server().add_service(AgentService::new(agent).into_server());
    println!("parsec dev: {shard_count} shards, ticket machine and agent in one process");
    println!("  agent (Lua contracts, gRPC): {listen}");
    println!("  try: parsec bench lua-pay --duration 10");
    serve(listen, router).await
}
