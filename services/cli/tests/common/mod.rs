//! Helpers shared by the multi-process tests: asking Raft members for their status, free ports.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part

use parsec_core::ClusterConfig;
use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_raft::pb::{StatusReply, StatusRequest};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

pub const PARSEC: &str = env!("CARGO_BIN_EXE_parsec");

/// A port of 127.0.0.1 that is free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long a test waits for one step of recovery before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The Raft status of the member at `address`, if it answers (a member that is down, or cut
/// off by a partition, answers nothing within half a second).
pub async fn raft_status(address: &str) -> Option<StatusReply> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
        .ok()?;
    Some(
        RaftAdminClient::new(channel)
            .status(StatusRequest {})
            .await
            .ok()?
            .into_inner(),
    )
}

/// Waits until a member other than `not` leads the group; returns its id and address.
pub async fn group_leader(replicas: &[String], not: Option<u64>) -> (u64, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        for address in replicas {
            if let Some(status) = raft_status(address).await
                && status.role == "leader"
                && Some(status.node_id) != not
            {
                return (status.node_id, address.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no leader elected in {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running cluster, stopped when dropped (also when a check fails).
pub struct LocalCluster {
    pub dir: tempfile::TempDir,
    /// Processes the test started itself (members added through the admin API), reaped on drop.
    extra: std::cell::RefCell<Vec<std::process::Child>>,
}

impl LocalCluster {
    pub fn up() -> Self {
        Self::up_with_replicas(1)
    }

    /// A ticket machine of `replicas` members, unreplicated shards.
    pub fn up_with_replicas(replicas: u32) -> Self {
        Self::up_with(replicas, 1, 10_000)
    }

    pub fn up_with(replicas: u32, shard_replicas: u32, snapshot_every: u64) -> Self {
        Self::up_args(&[
            "--shards",
            "2",
            "--agents",
            "2",
            "--replicas",
            &replicas.to_string(),
            "--shard-replicas",
            &shard_replicas.to_string(),
            "--snapshot-every",
            &snapshot_every.to_string(),
        ])
    }

    /// `parsec cluster up ARGS… --dir <a new temporary folder>`.
    pub fn up_args(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let output = Command::new(PARSEC)
            .args(["cluster", "up"])
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .expect("run parsec cluster up");
        assert!(
            output.status.success(),
            "cluster up failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            dir,
            extra: Default::default(),
        }
    }

    pub fn topology_path(&self) -> PathBuf {
        self.dir.path().join("topology.yaml")
    }

    pub fn topology(&self) -> ClusterConfig {
        ClusterConfig::load(&self.topology_path()).expect("topology")
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push_str(&format!("== {}\n", entry.path().display()));
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        out
    }

    /// First replica of every shard.
    pub fn shard_addresses(&self) -> Vec<String> {
        self.topology()
            .shards
            .iter()
            .map(|s| s.replicas[0].address.clone())
            .collect()
    }

    /// An 8-second, 64-in-flight payment run over every agent, printing its report as JSON.
    pub fn start_background_bench(&self) -> std::process::Child {
        self.start_bench_for(8)
    }

    /// A 64-in-flight payment run of at most `seconds` over every agent (SIGINT ends it early),
    /// printing its report as JSON.
    pub fn start_bench_for(&self, seconds: u32) -> std::process::Child {
        Command::new(PARSEC)
            .args(["bench", "lua-pay", "--json", "--wallets", "1000"])
            .args(["--concurrency", "64", "--duration"])
            .arg(seconds.to_string())
            .arg("--topology")
            .arg(self.topology_path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(
                std::fs::File::create(self.dir.path().join("logs/bench.log"))
                    .map(std::process::Stdio::from)
                    .unwrap_or_else(|_| std::process::Stdio::null()),
            )
            .spawn()
            .expect("start bench")
    }

    /// `kill -9` of one of the cluster's processes (`shard-0-2`, `agent-1`, …).
    pub fn kill9(&self, name: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("pids/{name}.pid")))
            .expect("pid file");
        let killed = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill");
        assert!(killed.success(), "kill -9 {name}");
        // SIGKILL is delivered asynchronously: wait (bounded) until the process is gone (or a
        // zombie), so that `cluster start` does not find it still running.
        let stat = format!("/proc/{}/stat", pid.trim());
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            let dead = state
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_none_or(|s| s == "Z" || s == "X");
            if dead {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} survived kill -9"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// `parsec cluster start`: a killed process comes back from its disk (or empty, `wipe`).
    pub fn start(&self, name: &str, wipe: bool) {
        let mut command = Command::new(PARSEC);
        command
            .args(["cluster", "start", "--dir"])
            .arg(self.dir.path())
            .arg(name);
        if wipe {
            command.arg("--wipe");
        }
        let output = command.output().expect("run parsec cluster start");
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stderr),
            self.logs()
        );
    }

    /// The addresses of shard `shard`'s replicas, by node id.
    pub fn shard_replicas(&self, shard: usize) -> Vec<(u64, String)> {
        self.topology().shards[shard]
            .replicas
            .iter()
            .map(|r| (r.node_id.0, r.address.clone()))
            .collect()
    }

    /// Starts a new replica `node` of shard `shard` that the topology does not list (to be added
    /// through the admin API); `parsec cluster down` stops it with the others. Returns its address.
    pub fn start_extra_shard_member(&self, shard: u32, node: u64) -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let name = format!("shard-{shard}-{node}");
        let log = std::fs::File::create(self.dir.path().join(format!("logs/{name}.log")))
            .expect("log file");
        let child = Command::new(PARSEC)
            .args(["shard", "--topology"])
            .arg(self.topology_path())
            .args(["--shard", &shard.to_string(), "--node", &node.to_string()])
            .args(["--listen", &address, "--data-dir"])
            .arg(self.dir.path().join(format!("data/{name}")))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start extra member");
        std::fs::write(
            self.dir.path().join(format!("pids/{name}.pid")),
            child.id().to_string(),
        )
        .expect("pid file");
        self.extra.borrow_mut().push(child);
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(std::time::Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        address
    }

    /// Every process is still alive.
    pub fn assert_all_running(&self) {
        for entry in std::fs::read_dir(self.dir.path().join("pids"))
            .expect("pids")
            .flatten()
        {
            let pid = std::fs::read_to_string(entry.path()).expect("pid file");
            let alive = Path::new(&format!("/proc/{}", pid.trim())).exists();
            assert!(alive, "{} died\n{}", entry.path().display(), self.logs());
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(PARSEC)
            .args(["cluster", "down", "--dir"])
            .arg(self.dir.path())
            .output();
        for mut child in self.extra.borrow_mut().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // PARSEC_KEEP_CLUSTER=1 keeps the logs and data of every test cluster for a post-mortem.
        if std::env::var_os("PARSEC_KEEP_CLUSTER").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("cluster kept in {}", kept.keep().display());
        }
    }
}
