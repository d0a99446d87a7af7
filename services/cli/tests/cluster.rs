//! The acceptance test of the transaction core: a cluster of separate processes on 127.0.0.1
//! (2 shards, 1 ticket machine, 2 agents) speaking gRPC, driven by the `parsec` binary itself.
//!
//! One cluster serves every check, in order, so the suite pays for one start-up.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use bytes::Bytes;
use common::{LocalCluster, PARSEC, WAIT, group_leader, raft_status};
use parsec_proto as pb;
use std::process::Command;
use tonic::transport::Channel;

/// Runs `parsec bench lua-pay --json` against the cluster and returns its report.
fn bench(cluster: &LocalCluster, extra: &[&str]) -> serde_json::Value {
    let output = Command::new(PARSEC)
        .args(["bench", "lua-pay", "--json", "--topology"])
        .arg(cluster.topology_path())
        .args(extra)
        .output()
        .expect("run parsec bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed ({}): {stdout}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    serde_json::from_str(stdout.trim()).expect("bench prints one JSON object")
}

#[test]
fn multi_process_cluster() {
    let cluster = LocalCluster::up();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // 1,000 wallets, 256 payments in flight, at least 20,000 payments: the total is conserved
    // and every wallet holds exactly what the acknowledged payments say (none lost, none twice).
    let report = bench(
        &cluster,
        &[
            "--wallets",
            "1000",
            "--concurrency",
            "256",
            "--payments",
            "20000",
            "--duration",
            "600",
        ],
    );
    eprintln!("uniform: {report}");
    assert!(report["committed"].as_u64().unwrap() >= 20_000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["total_ok"], true, "{report}");
    assert_eq!(report["wallets_ok"], true, "{report}");

    // 30% of payments go to one wallet: heavy wound-wait contention, and still every payment
    // finishes (no deadlock, no starvation: an error or a stuck worker would show here).
    let report = bench(
        &cluster,
        &[
            "--wallets",
            "1000",
            "--concurrency",
            "256",
            "--payments",
            "5000",
            "--hot",
            "0.3",
            "--duration",
            "600",
        ],
    );
    eprintln!("hot wallet: {report}");
    assert!(report["committed"].as_u64().unwrap() >= 5_000, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["total_ok"], true, "{report}");
    assert_eq!(report["wallets_ok"], true, "{report}");
    assert!(
        report["retries"].as_u64().unwrap() > 0,
        "a hot wallet must cause wounds: {report}"
    );

    runtime.block_on(hostile_input(&cluster));
    lua_cli(&cluster);
    cluster.assert_all_running();
}

/// `parsec lua deploy | call | read` against one agent, read back through the other.
fn lua_cli(cluster: &LocalCluster) {
    let topology = cluster.topology();
    let lua = |agent: &str, args: &[&str]| {
        let output = Command::new(PARSEC)
            .args(["lua", "--agent", agent])
            .args(args)
            .output()
            .expect("run parsec lua");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let counter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../agent/contracts/counter.lua"
    );
    let (first, second) = (&topology.agents[0].address, &topology.agents[1].address);
    let (ok, _, err) = lua(first, &["deploy", "--key", "examples/counter", counter]);
    assert!(ok, "{err}");
    assert!(
        lua(
            first,
            &["call", "--key", "examples/counter", "--param", "5"]
        )
        .0
    );
    let (ok, out, err) = lua(
        second,
        &["call", "--key", "examples/counter", "--param", "2"],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#""counter" = "7""#);
    let (ok, out, _) = lua(second, &["--json", "read", "counter"]);
    assert!(ok);
    assert_eq!(out.trim(), r#"{"counter":"0x37"}"#);
    let (ok, _, err) = lua(first, &["call", "--key", "examples/missing"]);
    assert!(!ok);
    assert!(err.contains("contract_not_found"), "{err}");
}

/// `kill -9` of an agent in the middle of a load run: the payments it acknowledged stay, none is
/// applied twice or half (the total is conserved), and the shards drop every ticket it held within
/// its lease, without waiting for it to come back.
#[test]
fn a_killed_agent_releases_its_locks_within_its_lease() {
    let cluster = LocalCluster::up();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bench = cluster.start_background_bench();

    // Kill agent 1 once payments flow (both agents get half the wallets).
    let shards = cluster.shard_addresses();
    runtime.block_on(wait_for_payments(&shards));
    let pid = std::fs::read_to_string(cluster.dir.path().join("pids/agent-1.pid")).expect("pid");
    let killed = Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let killed_at = std::time::Instant::now();

    // While the load goes on through agent 0, every ticket of agent 1 leaves every shard.
    let released_after = runtime.block_on(async {
        let deadline = killed_at + std::time::Duration::from_secs(30);
        loop {
            let mut left = 0;
            for address in &shards {
                let mut client = pb::shard_client::ShardClient::new(channel(address).await);
                left += client
                    .get_tickets(pb::GetTicketsRequest {
                        agent: Some(1),
                        ticket: None,
                    })
                    .await
                    .expect("get tickets")
                    .into_inner()
                    .tickets
                    .len();
            }
            if left == 0 {
                return killed_at.elapsed();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} tickets left\n{}",
                cluster.logs()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    eprintln!("dead agent's tickets released {released_after:?} after the kill (lease 3 s)");

    let output = bench.wait_with_output().expect("bench");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("report");
    eprintln!("agent killed mid-run: {report}");
    assert_eq!(report["total_ok"], true, "{report}\n{}", cluster.logs());
    assert!(
        report["errors"].as_u64().unwrap() > 0,
        "the kill hit no payment: {report}"
    );
    // After the run, no lock is left anywhere.
    runtime.block_on(async {
        for address in &shards {
            assert_no_locks(address).await;
        }
    });
}

/// `kill -9` of the ticket machine's Raft leader in the middle of a load run: the survivors
/// elect a new leader, agents follow it, and no payment fails or is lost.
#[test]
fn the_ticket_machine_survives_the_death_of_its_leader() {
    let cluster = LocalCluster::up_with_replicas(3);
    let topology = cluster.topology();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ticketers: Vec<String> = topology
        .ticket_machine
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let (leader, _) = runtime.block_on(group_leader(&ticketers, None));
    let bench = cluster.start_background_bench();
    let shards = cluster.shard_addresses();
    runtime.block_on(wait_for_payments(&shards));
    let pid_file = cluster
        .dir
        .path()
        .join(format!("pids/ticketer-{leader}.pid"));
    let pid = std::fs::read_to_string(pid_file).expect("leader pid");
    assert!(
        Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill")
            .success()
    );
    let killed_at = std::time::Instant::now();
    let (new_leader, _) = runtime.block_on(group_leader(&ticketers, Some(leader)));
    eprintln!(
        "ticket machine: leader {leader} killed, node {new_leader} elected {:?} later",
        killed_at.elapsed()
    );

    // `parsec status` shows the dead replica and the new leader, and exits 2.
    let status = Command::new(PARSEC)
        .args(["status", "--json", "--topology"])
        .arg(cluster.topology_path())
        .output()
        .expect("run parsec status");
    assert_eq!(status.status.code(), Some(2), "a replica is down");
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&status.stdout).expect("status prints JSON");
    let role = |node: u64| {
        rows.iter()
            .find(|r| r["group"] == "ticket-machine" && r["node"] == node)
            .map(|r| r["role"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(role(leader).as_deref(), Some("unreachable"), "{rows:?}");
    assert_eq!(role(new_leader).as_deref(), Some("leader"), "{rows:?}");
    // Two single-replica shard groups, each its own leader.
    let shard_rows: Vec<_> = rows
        .iter()
        .filter(|r| r["group"].as_str().is_some_and(|g| g.starts_with("shard-")))
        .collect();
    assert_eq!(shard_rows.len(), 2, "{rows:?}");
    assert!(shard_rows.iter().all(|r| r["role"] == "leader"), "{rows:?}");

    let output = bench.wait_with_output().expect("bench");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("report");
    eprintln!("ticket machine leader killed mid-run: {report}");
    assert_eq!(report["total_ok"], true, "{report}\n{}", cluster.logs());
    assert_eq!(report["wallets_ok"], true, "{report}");
    assert_eq!(
        report["errors"],
        0,
        "failover must delay payments, not fail them: {report}\n{}",
        cluster.logs()
    );
}

/// Issue 3's acceptance run: 2 shards × 3 replicas, a ticket machine × 3 and 2 agents under the
/// Lua pay workload, while in turn: the leader of shard 0 is killed (`kill -9`); a follower of
/// shard 1 is killed and restarted from its disk; a follower of shard 1 is removed, wiped and
/// added back (restored by a snapshot install); shard 0 grows to 5 members and shrinks back to
/// 3, its leader removed first; an agent is killed. No acknowledged payment is lost or applied
/// twice (every wallet balance is exact), and no lock is left behind.
#[test]
fn shard_groups_survive_crashes_restarts_wipes_and_membership_changes() {
    use parsec_raft::pb::{AddLearnerRequest, NodeRequest};
    let cluster = LocalCluster::up_with(3, 3, 100);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let bench = cluster.start_bench_for(300);
    let shard0 = cluster.shard_replicas(0);
    let shard1 = cluster.shard_replicas(1);
    let addresses =
        |group: &[(u64, String)]| -> Vec<String> { group.iter().map(|(_, a)| a.clone()).collect() };
    runtime.block_on(wait_for_payments(&cluster.shard_addresses()));

    // 1. kill -9 the leader of shard 0: the survivors elect, and commits resume.
    let (old_leader, _) = runtime.block_on(group_leader(&addresses(&shard0), None));
    cluster.kill9(&format!("shard-0-{old_leader}"));
    let killed_at = std::time::Instant::now();
    let (new_leader, new_address) =
        runtime.block_on(group_leader(&addresses(&shard0), Some(old_leader)));
    let elected = killed_at.elapsed();
    let first = runtime.block_on(shard_applied(&new_address));
    runtime.block_on(async {
        while shard_applied(&new_address).await <= first {
            assert!(killed_at.elapsed() < WAIT, "no commit on the new leader");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    eprintln!(
        "SHARD FAILOVER: leader {old_leader} of shard 0 killed; node {new_leader} elected after \
         {elected:?}, first commit on it {:?} after the kill",
        killed_at.elapsed()
    );
    // The old leader comes back from its disk as a follower and catches up.
    cluster.start(&format!("shard-0-{old_leader}"), false);
    runtime.block_on(catch_up(&addresses(&shard0), old_leader, &shard0));

    // 2. kill -9 a follower of shard 1, let the group move on, restart it from its disk.
    let (leader1, leader1_address) = runtime.block_on(group_leader(&addresses(&shard1), None));
    let follower = shard1
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader1)
        .unwrap();
    cluster.kill9(&format!("shard-1-{follower}"));
    let before = runtime
        .block_on(raft_status(&leader1_address))
        .unwrap()
        .commit_index;
    runtime.block_on(async {
        while raft_status(&leader1_address).await.unwrap().commit_index < before.map(|i| i + 200) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    let restarted_at = std::time::Instant::now();
    cluster.start(&format!("shard-1-{follower}"), false);
    runtime.block_on(catch_up(&addresses(&shard1), follower, &shard1));
    eprintln!(
        "FOLLOWER RESTART: caught up {:?} after its restart",
        restarted_at.elapsed()
    );

    // 3. Remove a follower of shard 1, wipe its disk, add it back: a snapshot restores it.
    let wiped = shard1
        .iter()
        .map(|(id, _)| *id)
        .find(|id| *id != leader1 && *id != 1)
        .unwrap();
    let wiped_address = shard1
        .iter()
        .find(|(id, _)| *id == wiped)
        .unwrap()
        .1
        .clone();
    runtime.block_on(async {
        // The leader has compacted its log: an empty member can only be restored by a snapshot.
        let deadline = std::time::Instant::now() + WAIT;
        while raft_status(&leader1_address)
            .await
            .and_then(|s| s.purged_index)
            .is_none()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the leader never compacted its log"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut admin = admin(&leader1_address).await;
        admin
            .remove_member(NodeRequest { node_id: wiped })
            .await
            .expect("remove member");
    });
    cluster.kill9(&format!("shard-1-{wiped}"));
    let wiped_at = std::time::Instant::now();
    cluster.start(&format!("shard-1-{wiped}"), true);
    runtime.block_on(async {
        let mut admin = admin(&leader1_address).await;
        admin
            .add_learner(AddLearnerRequest {
                node_id: wiped,
                addr: wiped_address.clone(),
            })
            .await
            .expect("add learner");
        admin
            .promote_learner(NodeRequest { node_id: wiped })
            .await
            .expect("promote learner");
    });
    runtime.block_on(catch_up(&addresses(&shard1), wiped, &shard1));
    let restored = runtime.block_on(raft_status(&wiped_address)).unwrap();
    assert!(
        restored.snapshot_index.is_some(),
        "the wiped member was not restored by a snapshot: {restored:?}"
    );
    eprintln!(
        "WIPED FOLLOWER: restored by a snapshot at index {:?} ({} bytes) {:?} after the wipe",
        restored.snapshot_index,
        restored.snapshot_size_bytes,
        wiped_at.elapsed()
    );

    // 4. Shard 0 grows to 5 members (learners first), then its leader and one more leave.
    let extra: Vec<(u64, String)> = (4..=5)
        .map(|node| (node, cluster.start_extra_shard_member(0, node)))
        .collect();
    let (leader0, leader0_address) = runtime.block_on(group_leader(&addresses(&shard0), None));
    let membership_at = std::time::Instant::now();
    runtime.block_on(async {
        let mut admin = admin(&leader0_address).await;
        for (node, address) in &extra {
            admin
                .add_learner(AddLearnerRequest {
                    node_id: *node,
                    addr: address.clone(),
                })
                .await
                .expect("add learner");
        }
        for (node, _) in &extra {
            admin
                .promote_learner(NodeRequest { node_id: *node })
                .await
                .expect("promote learner");
        }
        let status = raft_status(&leader0_address).await.unwrap();
        assert_eq!(status.voters, vec![1, 2, 3, 4, 5], "{status:?}");
        // Leadership moves away from the leader by removing it; then one more member leaves.
        admin
            .remove_member(NodeRequest { node_id: leader0 })
            .await
            .expect("remove leader");
    });
    let all0: Vec<String> = addresses(&shard0)
        .into_iter()
        .chain(extra.iter().map(|(_, a)| a.clone()))
        .collect();
    let (successor, successor_address) = runtime.block_on(group_leader(&all0, Some(leader0)));
    let leaving = extra[0].0;
    runtime.block_on(async {
        let mut admin = admin(&successor_address).await;
        admin
            .remove_member(NodeRequest { node_id: leaving })
            .await
            .expect("remove member");
        let status = raft_status(&successor_address).await.unwrap();
        assert_eq!(status.voters.len(), 3, "{status:?}");
        assert!(!status.voters.contains(&leader0) && !status.voters.contains(&leaving));
    });
    eprintln!(
        "MEMBERSHIP: shard 0 went 3 -> 5 -> 3 in {:?}; leadership moved {leader0} -> {successor}",
        membership_at.elapsed()
    );
    // Removed members are shut down, as an operator shrinking the group would.
    cluster.kill9(&format!("shard-0-{leader0}"));
    cluster.kill9(&format!("shard-0-{leaving}"));

    // 5. kill -9 an agent mid-run: its tickets leave every shard within its lease.
    cluster.kill9("agent-1");
    let agent_killed_at = std::time::Instant::now();
    runtime.block_on(async {
        let groups = [all0.clone(), addresses(&shard1)];
        loop {
            let mut left = 0;
            for group in &groups {
                let (_, leader) = group_leader(group, None).await;
                let mut client = pb::shard_client::ShardClient::new(channel(&leader).await);
                if let Ok(reply) = client
                    .get_tickets(pb::GetTicketsRequest {
                        agent: Some(1),
                        ticket: None,
                    })
                    .await
                {
                    left += reply.into_inner().tickets.len();
                } else {
                    left += 1;
                }
            }
            if left == 0 {
                break;
            }
            assert!(
                agent_killed_at.elapsed() < WAIT * 3,
                "{left} tickets of agent 1 left"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    eprintln!(
        "AGENT KILL: its tickets left every shard {:?} after the kill (lease 3 s)",
        agent_killed_at.elapsed()
    );

    // The load stops; every wallet is exact, and no lock is left on any leader.
    let stopped = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(stopped.success());
    let output = bench.wait_with_output().expect("bench");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).expect("report");
    eprintln!("shard failures mid-run: {report}");
    assert_eq!(report["total_ok"], true, "{report}\n{}", cluster.logs());
    assert_eq!(report["wallets_ok"], true, "{report}\n{}", cluster.logs());
    assert!(report["committed"].as_u64().unwrap() > 0, "{report}");
    runtime.block_on(async {
        for group in [all0.clone(), addresses(&shard1)] {
            let (_, leader) = group_leader(&group, None).await;
            assert_no_locks(&leader).await;
        }
    });
}

async fn admin(address: &str) -> parsec_raft::pb::raft_admin_client::RaftAdminClient<Channel> {
    parsec_raft::pb::raft_admin_client::RaftAdminClient::new(channel(address).await)
}

/// Waits until member `node` has applied everything its leader had committed when we asked.
async fn catch_up(replicas: &[String], node: u64, group: &[(u64, String)]) {
    let (_, leader) = group_leader(replicas, None).await;
    let target = raft_status(&leader).await.and_then(|s| s.commit_index);
    let address = &group.iter().find(|(id, _)| *id == node).expect("member").1;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = raft_status(address).await
            && status.applied_index >= target
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {node} did not catch up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The shard replica at `address` holds no lock and has no request waiting.
async fn assert_no_locks(address: &str) {
    let mut client = pb::shard_client::ShardClient::new(channel(address).await);
    let status = client
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (status.locked_keys, status.waiting_requests),
        (0, 0),
        "{status:?}"
    );
}

/// Commands the shard replica at `address` has applied.
async fn shard_applied(address: &str) -> u64 {
    let mut client = pb::shard_client::ShardClient::new(channel(address).await);
    client
        .status(pb::StatusRequest {})
        .await
        .map(|s| s.into_inner().applied_commands)
        .unwrap_or(0)
}

/// Returns once the shards have applied 2,000 commands: payments are flowing.
async fn wait_for_payments(shards: &[String]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while applied(shards).await < 2_000 {
        assert!(std::time::Instant::now() < deadline, "no payments flowing");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Commands applied by all shards so far.
async fn applied(shards: &[String]) -> u64 {
    let mut total = 0;
    for address in shards {
        total += shard_applied(address).await;
    }
    total
}

/// Garbage protobuf, unknown tickets and misbehaving contracts each get a clear error; nothing
/// is written and every process keeps serving.
async fn hostile_input(cluster: &LocalCluster) {
    let topology = cluster.topology();
    let shard = channel(&topology.shards[0].replicas[0].address).await;
    let agent = channel(&topology.agents[0].address).await;

    // Malformed protobuf on every service's busiest method.
    for (channel, path) in [
        (&shard, "/parsec.v1.Shard/Lock"),
        (&shard, "/parsec.v1.Shard/Prepare"),
        (&agent, "/parsec.v1.Agent/Execute"),
        (&agent, "/parsec.v1.Agent/Deploy"),
    ] {
        let status = parsec_bench::raw_grpc::call(
            channel,
            path,
            Bytes::from_static(b"\xff\xff\xff\xff\x0f\x12garbage"),
        )
        .await
        .expect_err("garbage must be refused");
        assert!(
            status.message().to_lowercase().contains("decode"),
            "{path}: {status:?}"
        );
    }

    // Unknown tickets: each call is answered with its protocol error.
    let mut shard_client = pb::shard_client::ShardClient::new(shard.clone());
    let lock = shard_client
        .lock(pb::LockRequest {
            ticket: 42,
            attempt: 0,
            agent: 9,
            first: false,
            locks: vec![pb::KeyLock {
                key: Bytes::from_static(b"k"),
                mode: pb::LockMode::Write as i32,
            }],
            wait_timeout_ms: 100,
        })
        .await
        .expect("lock answered")
        .into_inner();
    assert_eq!(
        lock.error.expect("error").code,
        pb::ErrorCode::UnknownTicket as i32
    );
    let prepare = shard_client
        .prepare(pb::PrepareRequest {
            ticket: 42,
            writes: vec![pb::KeyValue {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            }],
            lock_count: 1,
            ..Default::default()
        })
        .await
        .expect("prepare answered")
        .into_inner();
    assert_eq!(
        prepare.error.expect("error").code,
        pb::ErrorCode::UnknownTicket as i32
    );
    let commit = shard_client
        .commit(pb::TicketRequest {
            ticket: 42,
            attempt: 0,
            fence: false,
        })
        .await
        .expect("commit answered")
        .into_inner();
    assert_eq!(
        commit.error.expect("error").code,
        pb::ErrorCode::NotPrepared as i32
    );
    let bad_mode = shard_client
        .lock(pb::LockRequest {
            ticket: 43,
            first: true,
            locks: vec![pb::KeyLock {
                key: Bytes::from_static(b"k"),
                mode: 7,
            }],
            ..Default::default()
        })
        .await
        .expect_err("an unknown lock mode is refused");
    assert_eq!(bad_mode.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        shard_client
            .read(pb::ReadRequest {
                keys: vec![Bytes::from_static(b"k")]
            })
            .await
            .unwrap()
            .into_inner()
            .values,
        vec![Bytes::new()],
        "nothing was written"
    );

    // Misbehaving contracts.
    let mut agent_client = pb::agent_client::AgentClient::new(agent.clone());
    let cases: [(&str, &str, pb::AgentErrorCode); 5] = [
        (
            "bad/loop",
            "while true do end",
            pb::AgentErrorCode::InstructionBudgetExceeded,
        ),
        (
            "bad/alloc",
            "local t = {} local s = string.rep('x', 1 << 20) while true do t[#t + 1] = s .. #t end",
            pb::AgentErrorCode::MemoryLimitExceeded,
        ),
        (
            "bad/error",
            "local k = coroutine.yield('victim') error('boom')",
            pb::AgentErrorCode::ContractFailed,
        ),
        (
            "bad/yield",
            "coroutine.yield({1, 2, 3}) return {}",
            pb::AgentErrorCode::ContractFailed,
        ),
        (
            "bad/unlocked",
            "return { victim = 'stolen' }",
            pb::AgentErrorCode::ContractFailed,
        ),
    ];
    for (key, code, expected) in cases {
        let deploy = agent_client
            .deploy(pb::DeployRequest {
                key: Bytes::from(key),
                code: Bytes::from(code),
                runtime: pb::Runtime::Lua as i32,
            })
            .await
            .expect("deploy answered")
            .into_inner();
        assert!(deploy.error.is_none(), "{key}: {deploy:?}");
        let reply = agent_client
            .execute(pb::ExecuteRequest {
                contract: Bytes::from(key),
                param: Bytes::new(),
                read_only: false,
                runtime: pb::Runtime::Lua as i32,
            })
            .await
            .expect("execute answered")
            .into_inner();
        let error = reply.error.unwrap_or_else(|| panic!("{key} must fail"));
        assert_eq!(error.code, expected as i32, "{key}: {}", error.message);
        assert!(reply.writes.is_empty(), "{key}");
    }
    let syntax = agent_client
        .deploy(pb::DeployRequest {
            key: Bytes::from("bad/syntax"),
            code: Bytes::from("return {"),
            runtime: pb::Runtime::Lua as i32,
        })
        .await
        .expect("deploy answered")
        .into_inner();
    assert_eq!(
        syntax.error.expect("refused").code,
        pb::AgentErrorCode::ContractInvalid as i32
    );
    let missing = agent_client
        .execute(pb::ExecuteRequest {
            contract: Bytes::from("no/such/contract"),
            ..Default::default()
        })
        .await
        .expect("execute answered")
        .into_inner();
    assert_eq!(
        missing.error.expect("refused").code,
        pb::AgentErrorCode::ContractNotFound as i32
    );
    let read = agent_client
        .read(pb::ReadRequest {
            keys: vec![Bytes::from("victim"), Bytes::from("bad/syntax")],
        })
        .await
        .expect("read answered")
        .into_inner();
    assert_eq!(
        read.values,
        vec![Bytes::new(), Bytes::new()],
        "nothing was written"
    );
}

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect()
        .await
        .expect("connect")
}
