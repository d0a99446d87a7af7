//! A network partition, for real: the three replicas of a shard each run in their own network
//! namespace, joined by a bridge to the ticket machine and an agent in the host namespace. Under
//! the Lua pay workload the shard leader's link is cut: the isolated leader commits nothing, the
//! majority elects a new leader and goes on, and after the link heals the old leader rejoins as a
//! follower and catches up; every wallet is exact at the end.
//!
//! Needs `ip netns` (root or CAP_NET_ADMIN). Where namespaces cannot be created the test says so
//! and passes without running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{PARSEC, WAIT, group_leader, raft_status as status};
use parsec_core::config::{AgentEndpoint, RaftGroup, Replica, ShardGroup};
use parsec_core::{AgentId, ClusterConfig, NodeId, Settings, ShardId};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `ip` with `args`; true when it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces, bridge and processes of the test, torn down when dropped.
struct Net {
    tag: String,
    subnet: String,
    processes: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Net {
    fn namespace(&self, node: u64) -> String {
        format!("{}n{node}", self.tag)
    }

    fn veth(&self, node: u64) -> String {
        format!("{}v{node}", self.tag)
    }

    fn address(&self, host: u32, port: u16) -> String {
        format!("{}.{host}:{port}", self.subnet)
    }

    /// The shard replicas' addresses, node 1 first.
    fn shard_addresses(&self) -> Vec<String> {
        (1..=3).map(|node| self.address(node, 7100)).collect()
    }

    /// A bridge with the host on .254 and three namespaces on .1, .2, .3; `None` when this
    /// machine does not allow it.
    fn create() -> Option<Net> {
        let pid = std::process::id();
        let tag = format!("pz{}", pid % 100_000);
        let subnet = format!("10.211.{}", pid % 250);
        let probe = format!("{tag}probe");
        if !ip(&["netns", "add", &probe]) {
            return None;
        }
        ip(&["netns", "del", &probe]);
        let net = Net {
            tag,
            subnet,
            processes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let bridge = format!("{}br", net.tag);
        let host = format!("{}.254/24", net.subnet);
        let steps: Vec<Vec<String>> = {
            let mut steps = vec![
                vec!["link", "add", &bridge, "type", "bridge"],
                vec!["addr", "add", &host, "dev", &bridge],
                vec!["link", "set", &bridge, "up"],
            ]
            .into_iter()
            .map(|s| s.into_iter().map(str::to_owned).collect())
            .collect::<Vec<Vec<String>>>();
            for node in 1..=3u64 {
                let ns = net.namespace(node);
                let veth = net.veth(node);
                let inside = format!("{}.{node}/24", net.subnet);
                for step in [
                    vec!["netns", "add", &ns],
                    vec![
                        "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                    ],
                    vec!["link", "set", &veth, "master", &bridge],
                    vec!["link", "set", &veth, "up"],
                    vec!["-n", &ns, "addr", "add", &inside, "dev", "eth0"],
                    vec!["-n", &ns, "link", "set", "eth0", "up"],
                    vec!["-n", &ns, "link", "set", "lo", "up"],
                ] {
                    steps.push(step.into_iter().map(str::to_owned).collect());
                }
            }
            steps
        };
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            assert!(ip(&args), "ip {}", args.join(" "));
        }
        Some(net)
    }

    fn topology(&self) -> ClusterConfig {
        let settings = Settings {
            raft_snapshot_every: 1_000,
            raft_logs_kept: 500,
            ..Settings::default()
        };
        ClusterConfig {
            name: "partition".into(),
            shards: vec![ShardGroup {
                id: ShardId(0),
                replicas: (1..=3)
                    .map(|node| Replica {
                        node_id: NodeId(node),
                        address: self.address(node as u32, 7100),
                    })
                    .collect(),
            }],
            ticket_machine: RaftGroup {
                replicas: vec![Replica {
                    node_id: NodeId(1),
                    address: self.address(254, 7200),
                }],
            },
            agents: vec![AgentEndpoint {
                id: AgentId(0),
                address: self.address(254, 7400),
                rpc_address: None,
            }],
            settings,
            tls: None,
        }
    }

    /// Starts `parsec args…` (inside namespace `ns` if given), logging to `name`.log.
    fn start(&mut self, name: &str, ns: Option<&str>, args: &[String]) {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut command = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, PARSEC]);
                c
            }
            None => Command::new(PARSEC),
        };
        let child = command
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start process");
        self.processes.push(child);
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                out.push_str(&format!("== {}\n", entry.path().display()));
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in 1..=3 {
            ip(&["netns", "del", &self.namespace(node)]);
        }
        ip(&["link", "del", &format!("{}br", self.tag)]);
    }
}

/// The Raft status of member `node`, asked from inside its own namespace (it may be cut off).
fn status_inside(net: &Net, node: u64, topology: &Path) -> serde_json::Value {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.namespace(node),
            PARSEC,
            "status",
            "--json",
            "--topology",
        ])
        .arg(topology)
        .output()
        .expect("parsec status");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    rows.into_iter()
        .find(|r| r["group"] == "shard-0" && r["node"] == node)
        .expect("own row")
}

/// Waits until the leader at `address` has committed `more` entries beyond what it had, for at
/// most `wait`.
async fn commits(address: &str, more: u64, wait: Duration) -> Result<(), String> {
    let start = status(address)
        .await
        .and_then(|s| s.commit_index)
        .unwrap_or(0);
    let deadline = Instant::now() + wait;
    while status(address)
        .await
        .and_then(|s| s.commit_index)
        .unwrap_or(0)
        < start + more
    {
        if Instant::now() >= deadline {
            return Err(format!(
                "{address} did not commit {more} entries in {wait:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[test]
fn a_partitioned_leader_commits_nothing_and_rejoins_after_healing() {
    let Some(mut net) = Net::create() else {
        eprintln!(
            "SKIPPED: network namespaces are not available here (`ip netns add` needs root or \
             CAP_NET_ADMIN); the partition test did not run"
        );
        return;
    };
    let topology = net.dir.path().join("topology.yaml");
    net.topology().save(&topology).unwrap();
    let t = topology.display().to_string();
    for node in 1..=3u64 {
        let data = net
            .dir
            .path()
            .join(format!("shard-{node}"))
            .display()
            .to_string();
        let ns = net.namespace(node);
        let args: Vec<String> = ["shard", "--topology", &t, "--shard", "0", "--node"]
            .iter()
            .map(|s| s.to_string())
            .chain([node.to_string(), "--data-dir".into(), data])
            .collect();
        net.start(&format!("shard-{node}"), Some(&ns), &args);
    }
    let ticketer_data = net.dir.path().join("ticketer").display().to_string();
    let ticketer: Vec<String> = ["ticketer", "--topology", &t, "--node", "1", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([ticketer_data])
        .collect();
    net.start("ticketer", None, &ticketer);
    let agent: Vec<String> = ["agent", "--topology", &t, "--agent", "0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    net.start("agent", None, &agent);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (old, _) = runtime.block_on(group_leader(&net.shard_addresses(), None));
    // The bench needs the agent serving: wait for its port (bounded) before starting it.
    let agent_address = net.address(254, 7400);
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(&agent_address).is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent never listened on {agent_address}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let bench = Command::new(PARSEC)
        .args([
            "bench",
            "lua-pay",
            "--json",
            "--wallets",
            "500",
            "--concurrency",
            "32",
        ])
        .args(["--duration", "300", "--agents", &agent_address])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(net.dir.path().join("bench.log")).expect("bench log"))
        .spawn()
        .expect("bench");
    let old_address = net.address(old as u32, 7100);
    // The bench first creates its wallets: on a slow debug build that alone can take a while.
    runtime
        .block_on(commits(&old_address, 50, 4 * WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", net.logs()));

    // Cut the leader off: its link to the bridge goes down.
    assert!(ip(&["link", "set", &net.veth(old), "down"]));
    let cut_at = Instant::now();
    let (new, new_address) = runtime.block_on(group_leader(&net.shard_addresses(), Some(old)));
    let new_status = runtime.block_on(status(&new_address)).unwrap();
    eprintln!(
        "PARTITION: leader {old} cut off; node {new} elected {:?} later",
        cut_at.elapsed()
    );
    let isolated_before = status_inside(&net, old, &topology);
    runtime
        .block_on(commits(&new_address, 50, WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", net.logs()));
    let isolated_after = status_inside(&net, old, &topology);
    assert_eq!(
        isolated_before["commit_index"], isolated_after["commit_index"],
        "the isolated old leader committed while cut off"
    );
    let majority_commit = runtime.block_on(status(&new_address)).unwrap().commit_index;
    eprintln!(
        "PARTITION: isolated node {old} stayed at commit index {} (role {}), the majority went \
         from {:?} to {majority_commit:?}",
        isolated_after["commit_index"], isolated_after["role"], new_status.commit_index
    );

    // Heal: the old leader learns the new term, follows and catches up.
    assert!(ip(&["link", "set", &net.veth(old), "up"]));
    let healed_at = Instant::now();
    runtime.block_on(async {
        let target = status(&new_address).await.unwrap().commit_index;
        loop {
            if let Some(s) = status(&old_address).await
                && s.role != "leader"
                && s.applied_index >= target
            {
                return;
            }
            assert!(healed_at.elapsed() < WAIT, "no convergence\n{}", net.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    eprintln!(
        "PARTITION: healed; node {old} caught up as a follower in {:?}",
        healed_at.elapsed()
    );
    runtime
        .block_on(commits(&new_address, 20, WAIT))
        .unwrap_or_else(|e| panic!("{e}\n{}", net.logs()));

    assert!(
        Command::new("kill")
            .args(["-INT", &bench.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let output = bench.wait_with_output().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("report");
    eprintln!("PARTITION: bench {report}");
    assert_eq!(report["total_ok"], true, "{report}\n{}", net.logs());
    assert_eq!(report["wallets_ok"], true, "{report}\n{}", net.logs());
}
