//! Wiring of each role: what `parsec shard | ticketer | agent | dev` start.

use openraft::{BasicNode, SnapshotPolicy};
use parsec_agent::agent::{Agent, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_agent::service::AgentService;
use parsec_broker::{Broker, BrokerSettings, GrpcShard, LocalShard, ShardPeers, ShardTransport};
use parsec_core::config::Replica;
use parsec_core::{AgentId, ClusterConfig, NodeId, Settings, ShardId};
use parsec_evm::{AgentChain, ChainSettings};
use parsec_raft::{RaftConfig, RaftNode, ReplicatedState};
use parsec_shard::state_machine::StateMachine;
use parsec_shard::{ShardEngine, ShardService};
use parsec_ticketer::TicketMachine;
use parsec_ticketer::{
    BlockClockSource, ClockSettings, GrpcTicketMachine, RangeSource, TicketDispenser,
    TicketMachineService,
};
use parsec_transport::Tls;
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
    #[error(transparent)]
    Transport(#[from] parsec_transport::TransportError),
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

/// Connections a role's gRPC server holds open at once (agents, peers, clients): beyond, new
/// ones are closed at once rather than exhaust the process's file descriptors.
const MAX_GRPC_CONNECTIONS: usize = 4_096;

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
    let incoming = parsec_transport::limit_connections(incoming, MAX_GRPC_CONNECTIONS);
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

/// The gRPC server of a role: with `tls`, only peers holding a certificate of the cluster's CA
/// get past the handshake (the Raft admin API included).
fn server(tls: Option<&Tls>) -> Result<Server, NodeError> {
    Ok(parsec_transport::server(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .concurrency_limit_per_connection(32_768))
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

fn shard_service(engine: ShardEngine, settings: &Settings) -> ShardService {
    ShardService::new(engine, Duration::from_millis(settings.lock_wait_timeout_ms))
}

/// Starts this process's member of a Raft group, its log and snapshots in `data_dir`. The
/// replica with the lowest node id initializes the group on first boot (a no-op afterwards).
async fn start_member<S: ReplicatedState>(
    replicas: &[Replica],
    node: NodeId,
    data_dir: &Path,
    app: S,
    settings: &Settings,
    tls: Option<&Tls>,
) -> Result<Arc<RaftNode<S>>, NodeError> {
    let raft = RaftNode::start(node.0, data_dir, app, raft_config(settings, tls))
        .await
        .map_err(|e| NodeError::Raft(parsec_core::error_chain(&e)))?;
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
    Ok(raft)
}

fn lease(settings: &Settings) -> Duration {
    Duration::from_millis(settings.agent_lease_ms)
}

fn clock_settings(settings: &Settings) -> ClockSettings {
    ClockSettings {
        interval: Duration::from_millis(settings.block_interval_ms.max(1)),
        lease: lease(settings),
    }
}

/// What an agent serves to Ethereum clients.
pub struct RpcSetup {
    pub listen: SocketAddr,
    pub chain: ChainSettings,
    /// Fund the development accounts at start (if empty).
    pub fund: Option<(Vec<alloy_primitives::Address>, alloy_primitives::U256)>,
}

/// Starts the agent's chain (block clock reports, block feed), funds the development accounts
/// when asked, and serves JSON-RPC on `setup.listen` in the background.
async fn start_chain(
    agent: &Arc<Agent>,
    source: Arc<dyn BlockClockSource>,
    settings: &Settings,
    setup: RpcSetup,
) -> Result<(Arc<AgentChain>, parsec_evm::rpc::RpcHandle), NodeError> {
    let id = u64::from(agent.broker().agent().0);
    let chain = AgentChain::start(Arc::clone(agent), id, source, lease(settings), setup.chain);
    chain
        .wait_ready(Duration::from_millis(settings.rpc_timeout_ms) * 2)
        .await
        .map_err(|e| NodeError::Connect(e.to_string()))?;
    if let Some((accounts, balance)) = &setup.fund {
        chain
            .fund(accounts, *balance)
            .await
            .map_err(|e| NodeError::Connect(format!("funding the development accounts: {e}")))?;
    }
    let rpc = crate::chain::serve_rpc(Arc::clone(&chain), setup.listen, settings).await?;
    Ok((chain, rpc))
}

fn raft_config(settings: &Settings, tls: Option<&Tls>) -> RaftConfig {
    let mut config = RaftConfig {
        tls: tls.cloned(),
        ..RaftConfig::default()
    };
    config.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(settings.raft_snapshot_every);
    config.raft.max_in_snapshot_log_to_keep = settings.raft_logs_kept;
    config
}

/// The address a replica listens on: `--listen`, else its address in the topology. A member
/// added by a membership change is not in the topology yet and must be given `--listen`.
fn member_address(
    listen: Option<SocketAddr>,
    replicas: &[Replica],
    node: NodeId,
    group: &str,
) -> Result<SocketAddr, NodeError> {
    match (listen, replica(replicas, node, group)) {
        (Some(address), _) => Ok(address),
        (None, Ok(replica)) => listen_address(&replica.address),
        (None, Err(_)) => Err(NodeError::Topology(format!(
            "{group} has no replica {node}; a member being added needs --listen"
        ))),
    }
}

/// Transports to every shard of the topology, each following its group's leader.
fn grpc_shards(
    config: &ClusterConfig,
    tls: Option<&Tls>,
) -> Result<Vec<Arc<dyn ShardTransport>>, NodeError> {
    let timeout = Duration::from_millis(config.settings.rpc_timeout_ms);
    config
        .shards
        .iter()
        .map(|group| {
            let addresses: Vec<String> = group.replicas.iter().map(|r| r.address.clone()).collect();
            let shard = GrpcShard::new(&addresses, timeout, tls.cloned())
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

/// Serves shard `shard` replica `node` of the topology, replicated with Raft; its log and
/// snapshots live in `data_dir`.
pub async fn run_shard(
    config: &ClusterConfig,
    shard: ShardId,
    node: NodeId,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    tls: Option<&Tls>,
) -> Result<(), NodeError> {
    let group = config
        .shard(shard)
        .ok_or_else(|| NodeError::Topology(format!("the topology has no {shard}")))?;
    let address = member_address(listen, &group.replicas, node, &shard.to_string())?;
    let raft = start_member(
        &group.replicas,
        node,
        data_dir,
        StateMachine::new(),
        &config.settings,
        tls,
    )
    .await?;
    crate::observe::raft_member(&raft, &shard.to_string(), data_dir);
    let engine = ShardEngine::replicated(shard, raft.clone(), lease(&config.settings));
    start_recovery(&engine, grpc_shards(config, tls)?, &config.settings);
    tracing::info!(%shard, %node, %address, tls = tls.is_some(), data_dir = %data_dir.display(), "shard serving");
    let router = server(tls)?
        .add_routes(raft.routes())
        .add_service(crate::observe::raft_health())
        .add_service(shard_service(engine, &config.settings).into_server());
    let served = serve(address, router).await;
    // Close the log cleanly before the process exits.
    raft.shutdown().await;
    served
}

/// Serves ticket machine replica `node`, replicated with Raft; its log and snapshots live in
/// `data_dir`.
pub async fn run_ticketer(
    config: &ClusterConfig,
    node: NodeId,
    data_dir: &Path,
    listen: Option<SocketAddr>,
    tls: Option<&Tls>,
) -> Result<(), NodeError> {
    let replicas = &config.ticket_machine.replicas;
    let address = member_address(listen, replicas, node, "the ticket machine")?;
    let raft = start_member(
        replicas,
        node,
        data_dir,
        TicketMachine::new(),
        &config.settings,
        tls,
    )
    .await?;
    crate::observe::raft_member(&raft, "ticket-machine", data_dir);
    parsec_ticketer::metrics::register_all();
    tracing::info!(%node, %address, tls = tls.is_some(), data_dir = %data_dir.display(), "ticket machine serving");
    let service = TicketMachineService::replicated(raft.clone(), clock_settings(&config.settings));
    service.spawn_sealer();
    let router = server(tls)?
        .add_routes(raft.routes())
        .add_service(crate::observe::raft_health())
        .add_service(service.into_server());
    let served = serve(address, router).await;
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
    rpc: Option<RpcSetup>,
    tls: Option<&Tls>,
) -> Result<(), NodeError> {
    // An agent named by `--name` is not in the topology: it listens where `--listen` says.
    let address = match config.agent(id) {
        Some(endpoint) => listen_or(listen, &endpoint.address)?,
        None => listen.ok_or_else(|| {
            NodeError::Topology(format!("the topology has no {id}; give --listen"))
        })?,
    };
    let timeout = Duration::from_millis(config.settings.rpc_timeout_ms);
    let shards = grpc_shards(config, tls)?;
    let ticket_machine: Vec<String> = config
        .ticket_machine
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let tickets = GrpcTicketMachine::new(&ticket_machine, timeout, tls.cloned())
        .map_err(|e| NodeError::Connect(e.to_string()))?;
    let agent = build_agent(id, shards, Arc::new(tickets.clone()), &config.settings);
    start_heartbeats(&agent, &config.settings).await;
    let _chain = match rpc {
        Some(setup) => Some(start_chain(&agent, Arc::new(tickets), &config.settings, setup).await?),
        None => None,
    };
    crate::observe::agent(&agent);
    tracing::info!(agent = %id, %address, tls = tls.is_some(), "agent serving");
    serve(
        address,
        server(tls)?
            .add_service(crate::observe::agent_health())
            .add_service(AgentService::new(agent).into_server()),
    )
    .await
}

/// Where `parsec dev` keeps its shards.
pub enum DevStorage {
    /// Single-replica Raft groups with their logs and snapshots under this directory.
    Disk(std::path::PathBuf),
    /// Nothing on disk: the state is gone when the process ends.
    Memory,
}

/// Keys are placed by shard count: a data directory must always be opened with the count it was
/// created with.
fn check_dev_layout(dir: &Path, shard_count: u32) -> Result<(), NodeError> {
    let marker = dir.join("shards");
    let io = |e: std::io::Error| NodeError::Topology(format!("{}: {e}", marker.display()));
    match std::fs::read_to_string(&marker) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(count) if count == shard_count => Ok(()),
            Ok(count) => Err(NodeError::Topology(format!(
                "{} holds a {count}-shard cluster; run with --shards {count}, or choose another --data-dir",
                dir.display()
            ))),
            Err(_) => Err(NodeError::Topology(format!(
                "{} is not a shard count; remove it only if {} holds no data you need",
                marker.display(),
                dir.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io)?;
            std::fs::write(&marker, format!("{shard_count}\n")).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// `parsec dev`: every role in this process, connected in process, one agent served on `listen`.
/// Each shard is a single-replica Raft group with its log on disk (the same code path as a
/// cluster), unless `storage` says memory.
pub async fn run_dev(
    listen: SocketAddr,
    shard_count: u32,
    storage: DevStorage,
    rpc: RpcSetup,
    block_interval_ms: Option<u64>,
) -> Result<(), NodeError> {
    let mut settings = Settings::default();
    if let Some(interval) = block_interval_ms {
        settings.block_interval_ms = interval;
    }
    if let DevStorage::Disk(dir) = &storage {
        check_dev_layout(dir, shard_count)?;
    }
    let mut engines = Vec::new();
    let mut rafts = Vec::new();
    let mut rafts_ticketer = Vec::new();
    for i in 0..shard_count {
        let id = ShardId(i);
        let engine = match &storage {
            DevStorage::Memory => ShardEngine::with_lease(id, lease(&settings)),
            DevStorage::Disk(dir) => {
                let me = [Replica {
                    node_id: NodeId(0),
                    address: listen.to_string(),
                }];
                let dir = dir.join(format!("shard-{i}"));
                let raft = start_member(&me, NodeId(0), &dir, StateMachine::new(), &settings, None)
                    .await?;
                crate::observe::raft_member(&raft, &id.to_string(), &dir);
                rafts.push(raft.clone());
                ShardEngine::replicated(id, raft, lease(&settings))
            }
        };
        engine.wait_until_leading().await;
        engines.push(engine);
    }
    let services: Vec<ShardService> = engines
        .into_iter()
        .map(|engine| shard_service(engine, &settings))
        .collect();
    let shards: Vec<Arc<dyn ShardTransport>> = services
        .iter()
        .map(|service| Arc::new(LocalShard(service.clone())) as _)
        .collect();
    for service in &services {
        start_recovery(service.engine(), shards.clone(), &settings);
    }
    let ticket_machine = match &storage {
        DevStorage::Memory => TicketMachineService::new(clock_settings(&settings)),
        DevStorage::Disk(dir) => {
            let me = [Replica {
                node_id: NodeId(0),
                address: listen.to_string(),
            }];
            let raft = start_member(
                &me,
                NodeId(0),
                &dir.join("ticketer"),
                TicketMachine::new(),
                &settings,
                None,
            )
            .await?;
            rafts_ticketer.push(raft.clone());
            TicketMachineService::replicated(raft, clock_settings(&settings))
        }
    };
    ticket_machine.spawn_sealer();
    let agent = build_agent(
        AgentId(0),
        shards,
        Arc::new(ticket_machine.clone()),
        &settings,
    );
    start_heartbeats(&agent, &settings).await;
    let rpc_listen = rpc.listen;
    let _chain = start_chain(&agent, Arc::new(ticket_machine), &settings, rpc).await?;
    crate::observe::agent(&agent);
    // Everything but the agent runs in this process: nothing to protect with TLS.
    let router = server(None)?
        .add_service(crate::observe::agent_health())
        .add_service(AgentService::new(agent).into_server());
    println!("parsec dev: {shard_count} shards, ticket machine and agent in one process");
    match &storage {
        DevStorage::Disk(dir) => println!("  data (Raft logs, snapshots): {}", dir.display()),
        DevStorage::Memory => println!("  data: in memory, gone when this process ends"),
    }
    println!("  agent (Lua contracts, gRPC): {listen}");
    println!("  Ethereum JSON-RPC (HTTP and WebSocket): http://{rpc_listen}");
    println!("  try: parsec bench lua-pay --duration 10");
    let served = serve(listen, router).await;
    for raft in rafts {
        raft.shutdown().await;
    }
    for raft in rafts_ticketer {
        raft.shutdown().await;
    }
    served
}
