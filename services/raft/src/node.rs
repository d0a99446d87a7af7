//! `RaftNode<S>`: one member of a Raft group replicating the application `S`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admin::{AdminService, status_reply};
use crate::batcher::Batcher;
use crate::log_store::{CommittedHandle, LogStore, LogStoreError};
use crate::network::{MAX_MESSAGE_BYTES, NetworkFactory, TransportService};
use crate::pb;
use crate::pb::raft_admin_server::RaftAdminServer;
use crate::pb::raft_transport_server::RaftTransportServer;
use crate::state_machine::{Applied, ReplicatedState, StateMachine, StateMachineError};
use crate::types::{Node, NodeId, Raft, RaftMetrics};

/// Settings of a group member.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// openraft's own configuration (timeouts, snapshot policy, log retention).
    pub raft: Config,
    /// How long [`RaftNode::write`] waits for a command to be committed and applied.
    pub write_timeout: Duration,
    /// Mutual TLS towards the other members (and on [`RaftNode::serve`]); plain when absent.
    pub tls: Option<parsec_transport::Tls>,
}

impl Default for RaftConfig {
    /// Suited to 127.0.0.1 and a LAN: 100 ms heartbeats, 300–600 ms election timeout, a snapshot
    /// every 10 000 entries, 5 000 entries kept after a snapshot for lagging followers.
    fn default() -> Self {
        RaftConfig {
            raft: Config {
                cluster_name: "parsec".to_string(),
                heartbeat_interval: 100,
                election_timeout_min: 300,
                election_timeout_max: 600,
                install_snapshot_timeout: 2_000,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
                max_in_snapshot_log_to_keep: 5_000,
                ..Config::default()
            },
            write_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// Failure to start a node.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("creating data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening raft log in {path}: {source}")]
    Log {
        path: PathBuf,
        source: LogStoreError,
    },
    #[error("opening state machine in {path}: {source}")]
    StateMachine {
        path: PathBuf,
        source: StateMachineError,
    },
    #[error("invalid raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("starting raft: {0}")]
    Raft(#[from] openraft::error::Fatal<NodeId>),
}

/// Failure of [`RaftNode::initialize`].
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("initializing raft group: {0}")]
    Raft(#[from] RaftError<NodeId, InitializeError<NodeId, Node>>),
    #[error("raft stopped: {0}")]
    Fatal(#[from] openraft::error::Fatal<NodeId>),
}

/// Failure of [`RaftNode::write`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader; `leader` is `(id, "host:port")` of the leader if known.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The command was not applied within the timeout. It may still be committed later.
    #[error("write not applied within {0:?} (it may still be applied)")]
    Timeout(Duration),
    /// The Raft node stopped (shutdown or storage failure).
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// Failure of [`RaftNode::catch_up`].
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("not the leader")]
    NotLeader,
    #[error("log not applied within {0:?}")]
    Timeout(Duration),
}

/// Failure to start serving gRPC.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("server already running")]
    AlreadyServing,
    #[error("reading listener address: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Transport(#[from] parsec_transport::TransportError),
}

/// A running gRPC server started by [`RaftNode::serve`].
struct ServerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

/// One member of a Raft group replicating the application `S`.
pub struct RaftNode<S> {
    id: NodeId,
    raft: Raft,
    committed: CommittedHandle,
    log_open: std::sync::Weak<crate::log_store::OpenToken>,
    sm: StateMachine<S>,
    state: Arc<RwLock<Applied<S>>>,
    write_timeout: Duration,
    batcher: Batcher,
    server: Mutex<Option<ServerHandle>>,
    tls: Option<parsec_transport::Tls>,
    /// Latency instruments filled in by [`crate::metrics`] once the group is named.
    pub(crate) fsync_seconds: crate::log_store::FsyncHistogram,
    pub(crate) write_seconds: crate::batcher::WriteHistogram,
}

impl<S: ReplicatedState> RaftNode<S> {
    /// Opens the storage in `data_dir` (created if missing), restores `app` from the latest
    /// snapshot there, and starts Raft. Call [`Self::initialize`] on first boot of a new group.
    pub async fn start(
        node_id: NodeId,
        data_dir: impl AsRef<Path>,
        app: S,
        config: RaftConfig,
    ) -> Result<Self, StartError> {
        let dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let log = LogStore::open(&dir).map_err(|source| StartError::Log {
            path: dir.clone(),
            source,
        })?;
        let sm = StateMachine::open(&dir, app).map_err(|source| StartError::StateMachine {
            path: dir.clone(),
            source,
        })?;
        let raft_config = Arc::new(config.raft.validate()?);
        let committed = log.committed_handle();
        let log_open = log.open_watch();
        let fsync_seconds = log.fsync_histogram();
        let write_seconds = crate::batcher::WriteHistogram::default();
        let raft = Raft::new(
            node_id,
            raft_config,
            NetworkFactory::new(config.tls.clone()),
            log,
            sm.clone(),
        )
        .await?;
        tracing::info!(node_id, dir = %dir.display(), "raft node started");
        let members = raft.clone();
        let batcher = Batcher::start(
            raft.clone(),
            move |id| {
                let id = id?;
                let metrics = members.metrics();
                let address = metrics
                    .borrow()
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default();
                Some((id, address))
            },
            write_seconds.clone(),
        );
        Ok(RaftNode {
            batcher,
            id: node_id,
            raft,
            committed,
            log_open,
            state: sm.state(),
            sm,
            write_timeout: config.write_timeout,
            server: Mutex::new(None),
            tls: config.tls,
            fsync_seconds,
            write_seconds,
        })
    }

    /// Initializes a new group with `members` as voters. Idempotent: does nothing if this node
    /// already has a log or a vote (it was initialized before, or joined another group).
    pub async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<(), InitError> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Replicates `command`, applies it, and returns the application's result. Only the leader
    /// accepts writes; others answer [`WriteError::NotLeader`].
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, WriteError> {
        match tokio::time::timeout(self.write_timeout, self.batcher.write(command)).await {
            Err(_) => Err(WriteError::Timeout(self.write_timeout)),
            Ok(result) => result,
        }
    }

    /// Reads the application state (on this node: as applied locally, which on a follower may
    /// lag the leader). Do not block inside `f`: writers wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.state.read().app)
    }

    /// Confirms leadership with a quorum, then waits until every entry in this node's log (as of
    /// now) is applied here: afterwards the applied state reflects every write this leader took.
    pub async fn catch_up(&self, timeout: Duration) -> Result<(), CatchUpError> {
        let confirm = tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await;
        match confirm {
            Err(_) => return Err(CatchUpError::Timeout(timeout)),
            Ok(Err(_)) => return Err(CatchUpError::NotLeader),
            Ok(Ok(_)) => {}
        }
        let last = self.raft.metrics().borrow().last_log_index;
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(last, "catch up with the own log")
            .await
            .map(|_| ())
            .map_err(|_| CatchUpError::Timeout(timeout))
    }

    /// Index of the last log entry applied to the application on this node.
    pub fn applied_index(&self) -> Option<u64> {
        self.state.read().last_applied.map(|l| l.index)
    }
}

impl<S> RaftNode<S> {
    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The underlying openraft handle (metrics, `wait`, membership changes, triggers).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Last committed log index known to this node.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.get().map(|l| l.index)
    }

    /// fsyncs of the log since this node started.
    pub fn fsyncs(&self) -> u64 {
        self.committed.syncs()
    }

    /// Size in bytes of the latest snapshot on disk.
    pub fn snapshot_size(&self) -> u64 {
        self.sm.snapshot_size()
    }

    /// Latest openraft metrics.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Voters in the current membership.
    pub fn voter_count(&self) -> usize {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .count()
    }

    /// Whether this node currently believes it is the leader.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.id) && m.state == openraft::ServerState::Leader
    }

    /// The leader as `(id, "host:port")`, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let id = self.raft.metrics().borrow().current_leader?;
        Some((id, self.node_addr(id).unwrap_or_default()))
    }

    /// The same status the admin API's `Status` returns.
    pub fn status(&self) -> pb::StatusReply {
        status_reply(
            &self.metrics(),
            self.committed.get().map(|l| l.index),
            self.sm.snapshot_size(),
            self.committed.syncs(),
        )
    }

    fn node_addr(&self, id: NodeId) -> Option<String> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }
}

impl<S: ReplicatedState> RaftNode<S> {
    /// The gRPC services of this node (node-to-node transport and admin), to be added to the
    /// caller's tonic server next to its application service.
    pub fn services(
        &self,
    ) -> (
        RaftTransportServer<TransportService>,
        RaftAdminServer<AdminService<S>>,
    ) {
        let transport = RaftTransportServer::new(self.transport_service())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let admin = RaftAdminServer::new(self.admin_service());
        (transport, admin)
    }

    /// The node-to-node transport's handlers alone, to call in process (the fuzz targets).
    pub fn transport_service(&self) -> TransportService {
        TransportService::new(self.raft.clone(), self.id, self.committed.clone())
    }

    /// The admin API's handlers alone, to call in process (the fuzz targets).
    pub fn admin_service(&self) -> AdminService<S> {
        AdminService::new(self.raft.clone(), self.committed.clone(), self.sm.clone())
    }

    /// Both services as tonic `Routes` (`Server::builder().add_routes(node.routes())`).
    pub fn routes(&self) -> tonic::service::Routes {
        let (transport, admin) = self.services();
        tonic::service::Routes::new(transport).add_service(admin)
    }

    /// Serves the Raft services alone on `listener` until [`Self::shutdown`] (for processes
    /// with no other gRPC service, and tests). Returns the bound address.
    pub fn serve(&self, listener: TcpListener) -> Result<std::net::SocketAddr, ServeError> {
        let mut server = self.server.lock();
        if server.is_some() {
            return Err(ServeError::AlreadyServing);
        }
        let addr = listener.local_addr()?;
        let mut builder = parsec_transport::server(self.tls.as_ref())?;
        let (stop, stopped) = oneshot::channel::<()>();
        let routes = self.routes();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            builder
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        *server = Some(ServerHandle { stop, task });
        Ok(addr)
    }

    /// Stops Raft, then the server started by [`Self::serve`] (if any), and waits (up to 5 s)
    /// until the log's files are closed.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(node_id = self.id, "raft shutdown: {e}");
        }
        let server = self.server.lock().take();
        if let Some(ServerHandle { stop, mut task }) = server {
            let _ = stop.send(());
            match tokio::time::timeout(Duration::from_secs(2), &mut task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(node_id = self.id, "raft server: {e}"),
                Ok(Err(e)) => tracing::warn!(node_id = self.id, "raft server task: {e}"),
                Err(_) => task.abort(),
            }
        }
        // openraft's tasks drop their handles to the log asynchronously: wait until the log's
        // files are closed, so that the node can be restarted on the same data dir at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.log_open.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(node_id = self.id, "raft log still open 5 s after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::info!(node_id = self.id, "raft node stopped");
    }
}
