//! Test harness: a tiny key→value application and a cluster of real nodes, each with its own
//! tonic server on 127.0.0.1 (ephemeral port) and its own data directory.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, SnapshotPolicy};
use parsec_raft::{RaftConfig, RaftNode, ReplicatedState, WriteError};
use tokio::net::TcpListener;

/// The id of log entry `index` written in `term` by node 1.
pub fn log_id(term: u64, index: u64) -> openraft::LogId<u64> {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 1), index)
}

/// Key → value map; commands are `set <key> <value>`; results are the previous value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Kv {
    pub map: BTreeMap<String, String>,
}

impl ReplicatedState for Kv {
    fn apply(&mut self, command: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(command);
        let mut parts = text.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(k), Some(v)) => self
                .map
                .insert(k.to_string(), v.to_string())
                .unwrap_or_default()
                .into_bytes(),
            _ => b"error: bad command".to_vec(),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.map).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String> {
        self.map = postcard::from_bytes(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn config() -> RaftConfig {
    RaftConfig::default()
}

pub fn small_snapshot_config() -> RaftConfig {
    let mut c = RaftConfig::default();
    c.raft.snapshot_policy = SnapshotPolicy::LogsSinceLast(50);
    c.raft.max_in_snapshot_log_to_keep = 10;
    c.raft.purge_batch_size = 1;
    c
}

pub struct TestNode {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: String,
    pub node: Arc<RaftNode<Kv>>,
}

pub struct Cluster {
    pub _root: tempfile::TempDir,
    pub nodes: BTreeMap<u64, TestNode>,
    pub config: RaftConfig,
}

impl Cluster {
    /// Starts `ids` (not initialized).
    pub async fn start(ids: &[u64], config: RaftConfig) -> Cluster {
        let root = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster {
            _root: root,
            nodes: BTreeMap::new(),
            config,
        };
        for &id in ids {
            cluster.start_node(id, None).await;
        }
        cluster
    }

    /// Starts a 3-node group (1, 2, 3), initializes it and waits for a leader.
    pub async fn three(config: RaftConfig) -> Cluster {
        let c = Cluster::start(&[1, 2, 3], config).await;
        c.init(&[1, 2, 3]).await;
        c.wait_leader(&[1, 2, 3]).await;
        c
    }

    /// Starts node `id` in its own dir, on `addr` (a restart) or on a fresh ephemeral port.
    pub async fn start_node(&mut self, id: u64, addr: Option<String>) {
        let dir = self._root.path().join(format!("node-{id}"));
        let node = RaftNode::start(id, &dir, Kv::default(), self.config.clone())
            .await
            .expect("start node");
        let listener = match &addr {
            Some(a) => bind_retry(a).await,
            None => TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let bound = node.serve(listener).expect("serve");
        let node = TestNode {
            id,
            dir,
            addr: bound.to_string(),
            node: Arc::new(node),
        };
        self.nodes.insert(id, node);
    }

    pub async fn stop_node(&mut self, id: u64) -> TestNode {
        let n = self.nodes.remove(&id).expect("node exists");
        n.node.shutdown().await;
        n
    }

    pub fn members(&self, ids: &[u64]) -> BTreeMap<u64, BasicNode> {
        ids.iter()
            .map(|id| (*id, BasicNode::new(self.nodes[id].addr.clone())))
            .collect()
    }

    pub async fn init(&self, ids: &[u64]) {
        let members = self.members(ids);
        self.nodes[&ids[0]]
            .node
            .initialize(members.clone())
            .await
            .expect("initialize");
        // Idempotent: a second call is a no-op.
        self.nodes[&ids[0]]
            .node
            .initialize(members)
            .await
            .expect("initialize again");
    }

    pub fn node(&self, id: u64) -> &RaftNode<Kv> {
        &self.nodes[&id].node
    }

    /// Waits until every node in `ids` agrees on one leader among `ids`; returns its id.
    pub async fn wait_leader(&self, ids: &[u64]) -> u64 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let leaders: BTreeSet<Option<u64>> = ids
                .iter()
                .map(|id| self.node(*id).metrics().current_leader)
                .collect();
            if leaders.len() == 1
                && let Some(Some(l)) = leaders.iter().next()
                && ids.contains(l)
                && self.node(*l).is_leader()
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader among {ids:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn leader_id(&self) -> Option<u64> {
        self.nodes
            .values()
            .find(|n| n.node.is_leader())
            .map(|n| n.id)
    }

    /// Writes `set key value` on the current leader (retrying while leadership moves).
    pub async fn write(&self, key: &str, value: &str) -> Vec<u8> {
        let cmd = format!("set {key} {value}").into_bytes();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(l) = self.leader_id() {
                match self.node(l).write(cmd.clone()).await {
                    Ok(r) => return r,
                    Err(WriteError::NotLeader { .. }) => {}
                    Err(e) => panic!("write {key} on {l}: {e}"),
                }
            }
            assert!(Instant::now() < deadline, "write {key}: no leader");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every node in `ids` has applied at least the leader's last applied index, then
    /// returns their states (asserting they are equal).
    pub async fn wait_converged(&self, ids: &[u64]) -> Kv {
        let leader = self.wait_leader(ids).await;
        let applied = self.node(leader).applied_index();
        for id in ids {
            self.node(*id)
                .raft()
                .wait(Some(TIMEOUT))
                .applied_index_at_least(applied, format!("node {id} applies {applied:?}"))
                .await
                .expect("converged");
        }
        let reference = self.node(leader).read(|s| s.clone());
        for id in ids {
            let state = self.node(*id).read(|s| s.clone());
            assert_eq!(state, reference, "node {id} differs from leader {leader}");
        }
        reference
    }

    pub async fn shutdown(self) {
        for n in self.nodes.values() {
            n.node.shutdown().await;
        }
    }
}

async fn bind_retry(addr: &str) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "rebind {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
