//! Three-node (and five-node) groups of real nodes talking gRPC on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, TIMEOUT, config, small_snapshot_config};
use parsec_raft::WriteError;
use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_raft::pb::{AddLearnerRequest, NodeRequest, StatusRequest};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replication_and_not_leader() {
    let c = Cluster::three(config()).await;
    for i in 0..20 {
        c.write(&format!("k{i}"), &format!("v{i}")).await;
    }
    // Overwrite returns the previous value.
    assert_eq!(c.write("k0", "new").await, b"v0".to_vec());
    let state = c.wait_converged(&[1, 2, 3]).await;
    assert_eq!(state.map.len(), 20);
    assert_eq!(state.map["k0"], "new");

    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    match c.node(follower).write(b"set x y".to_vec()).await {
        Err(WriteError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, c.nodes[&leader].addr);
        }
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert_eq!(
        c.node(follower).leader(),
        Some((leader, c.nodes[&leader].addr.clone()))
    );

    // Status through the admin API.
    let mut admin = RaftAdminClient::connect(format!("http://{}", c.nodes[&follower].addr))
        .await
        .unwrap();
    let st = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.node_id, follower);
    assert_eq!(st.role, "follower");
    assert_eq!(st.leader_id, Some(leader));
    assert_eq!(st.voters, vec![1, 2, 3]);
    assert!(st.applied_index >= Some(21));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_failure_elects_new_leader_without_losing_writes() {
    let mut c = Cluster::three(config()).await;
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        c.write(&format!("a{i}"), "1").await;
        acked.insert(format!("a{i}"), "1".to_string());
    }
    let old = c.wait_leader(&[1, 2, 3]).await;
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();

    let t0 = Instant::now();
    c.stop_node(old).await;
    eprintln!("FAILOVER: stopping leader {old} took {:?}", t0.elapsed());
    // First successful write on the new leader.
    let deadline = t0 + TIMEOUT;
    let new_leader = 'outer: loop {
        for id in &rest {
            match c.node(*id).write(b"set after 1".to_vec()).await {
                Ok(_) => break 'outer *id,
                Err(WriteError::NotLeader { .. }) => {}
                Err(e) => panic!("write on {id}: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let failover = t0.elapsed();
    eprintln!(
        "FAILOVER: leader {old} stopped -> first write acknowledged by new leader {new_leader} after {failover:?}"
    );
    acked.insert("after".to_string(), "1".to_string());
    for i in 0..20 {
        c.write(&format!("b{i}"), "2").await;
        acked.insert(format!("b{i}"), "2".to_string());
    }
    let state = c.wait_converged(&rest).await;
    assert_eq!(state.map, acked, "acknowledged writes lost or extra");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_restarts_from_disk_and_catches_up() {
    restart_follower(config(), 25).await;
}

/// With a small snapshot policy the follower restarts from `snapshot.bin` plus the log tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_restarts_from_snapshot_and_log_tail() {
    restart_follower(small_snapshot_config(), 130).await;
}

async fn restart_follower(config: parsec_raft::RaftConfig, writes: usize) {
    let mut c = Cluster::three(config).await;
    for i in 0..writes {
        c.write(&format!("a{i}"), "1").await;
    }
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    c.wait_converged(&[1, 2, 3]).await;
    let before = c.node(follower).metrics();
    let stopped = c.stop_node(follower).await;
    for i in 0..25 {
        c.write(&format!("b{i}"), "2").await;
    }
    let t0 = Instant::now();
    c.start_node(follower, Some(stopped.addr.clone())).await;
    // Restart does not lose the snapshot: the state machine starts from it. openraft publishes
    // the reloaded snapshot in its metrics shortly after start, so wait for it (bounded).
    let expected = before.snapshot;
    let after_start = c
        .node(follower)
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot == expected, "snapshot reloaded from disk")
        .await
        .expect("the restarted node reports the snapshot it had before");
    assert_eq!(after_start.snapshot, before.snapshot);
    if before.snapshot.is_some() {
        assert!(after_start.last_applied >= before.snapshot);
    }
    let state = c.wait_converged(&[1, 2, 3]).await;
    eprintln!(
        "RESTART: follower {follower} (snapshot {:?}) restarted and caught up in {:?}",
        before.snapshot.map(|s| s.index),
        t0.elapsed()
    );
    assert_eq!(state.map.len(), writes + 25);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_follower_is_restored_by_snapshot_install() {
    let mut c = Cluster::three(small_snapshot_config()).await;
    for i in 0..220 {
        c.write(&format!("k{i}"), &format!("{i}")).await;
    }
    let leader = c.wait_leader(&[1, 2, 3]).await;
    // The leader has built a snapshot and purged the log before it.
    let m = c
        .node(leader)
        .raft()
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                m.snapshot.map(|s| s.index).unwrap_or(0) >= 150
                    && m.purged.map(|p| p.index).unwrap_or(0) >= 100
            },
            "leader snapshot and purge",
        )
        .await
        .unwrap();
    eprintln!(
        "SNAPSHOT: leader snapshot at {:?}, purged up to {:?}, snapshot {} bytes",
        m.snapshot,
        m.purged,
        c.node(leader).status().snapshot_size_bytes
    );
    // A wiped node must not rejoin under its old identity while still a member: it lost its
    // vote and its log (openraft's leader refuses such a log reversion). Remove it, wipe it,
    // restart it empty and add it back: it is caught up by a snapshot install.
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let mut admin = RaftAdminClient::connect(format!("http://{}", c.nodes[&leader].addr))
        .await
        .unwrap();
    admin
        .remove_member(NodeRequest { node_id: follower })
        .await
        .unwrap();
    let stopped = c.stop_node(follower).await;
    std::fs::remove_dir_all(&stopped.dir).unwrap();
    for i in 220..240 {
        c.write(&format!("k{i}"), &format!("{i}")).await;
    }
    let t0 = Instant::now();
    c.start_node(follower, Some(stopped.addr.clone())).await;
    admin
        .add_learner(AddLearnerRequest {
            node_id: follower,
            addr: stopped.addr.clone(),
        })
        .await
        .unwrap();
    admin
        .promote_learner(NodeRequest { node_id: follower })
        .await
        .unwrap();
    let state = c.wait_converged(&[1, 2, 3]).await;
    eprintln!("SNAPSHOT: wiped follower restored in {:?}", t0.elapsed());
    assert_eq!(state.map.len(), 240);
    let fm = c
        .node(follower)
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some(), "snapshot installed")
        .await
        .expect("the wiped follower was restored by a snapshot");
    assert!(fm.snapshot.is_some(), "follower got no snapshot: {fm:?}");
    assert!(
        stopped
            .dir
            .join(parsec_raft::state_machine::SNAPSHOT_FILE)
            .exists()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_changes_through_admin_api() {
    let mut c = Cluster::three(config()).await;
    c.start_node(4, None).await;
    c.start_node(5, None).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let mut admin = RaftAdminClient::connect(format!("http://{}", c.nodes[&leader].addr))
        .await
        .unwrap();
    let mut n = 0;
    let mut write = async |c: &Cluster| {
        n += 1;
        c.write(&format!("m{n}"), "x").await;
    };
    write(&c).await;

    // A writer on the leader runs concurrently with every membership change: every write succeeds.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let node = c.nodes[&leader].node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                node.write(format!("set w{done} y").into_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("concurrent write {done}: {e}"));
                done += 1;
            }
            done
        })
    };

    for id in [4, 5] {
        let r = admin
            .add_learner(AddLearnerRequest {
                node_id: id,
                addr: c.nodes[&id].addr.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.learners.contains(&id));
        write(&c).await;
    }
    for id in [4, 5] {
        admin
            .promote_learner(NodeRequest { node_id: id })
            .await
            .unwrap();
        write(&c).await;
    }
    let st = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.voters, vec![1, 2, 3, 4, 5]);
    assert!(st.learners.is_empty());

    // A follower refuses membership changes and names the leader.
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let mut fadmin = RaftAdminClient::connect(format!("http://{}", c.nodes[&follower].addr))
        .await
        .unwrap();
    let err = fadmin
        .remove_member(NodeRequest { node_id: 4 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        err.metadata()
            .get("x-raft-leader-addr")
            .and_then(|v| v.to_str().ok()),
        Some(c.nodes[&leader].addr.as_str())
    );

    // Remove two voters that are not the leader.
    let removed: Vec<u64> = [1, 2, 3, 4, 5]
        .into_iter()
        .filter(|id| *id != leader)
        .take(2)
        .collect();
    for id in &removed {
        admin
            .remove_member(NodeRequest { node_id: *id })
            .await
            .unwrap();
        write(&c).await;
    }
    let st = admin.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(st.voters.len(), 3);
    for id in &removed {
        c.stop_node(*id).await;
    }
    let remaining: Vec<u64> = c.nodes.keys().copied().collect();
    write(&c).await;
    stop.store(true, Ordering::Relaxed);
    let concurrent = writer.await.unwrap();
    eprintln!("MEMBERSHIP: {concurrent} concurrent writes succeeded during the changes");
    assert!(concurrent > 0);
    let state = c.wait_converged(&remaining).await;
    assert_eq!(state.map.len() as u64, 8 + concurrent);
    c.shutdown().await;
}

/// Not a benchmark (debug build, 3 nodes on one machine): reports write latency, sequential and
/// with concurrent writers (whose entries share fsyncs: group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_figures() {
    let c = Cluster::three(config()).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let node = c.nodes[&leader].node.clone();
    let t0 = Instant::now();
    for i in 0..100 {
        node.write(format!("set s{i} v").into_bytes())
            .await
            .unwrap();
    }
    let seq = t0.elapsed();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                node.write(format!("set c{w}-{i} v").into_bytes())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let conc = t0.elapsed();
    eprintln!(
        "WRITES: 100 sequential in {seq:?} ({:?}/write); 400 from 16 concurrent writers in {conc:?} ({:.0} writes/s)",
        seq / 100,
        400.0 / conc.as_secs_f64()
    );
    let state = c.wait_converged(&[1, 2, 3]).await;
    assert_eq!(state.map.len(), 500);
    c.shutdown().await;
}

/// openraft 0.9.25 has no leadership transfer: removing the leader from the voters is the way to
/// move leadership. The leader commits the change, steps down, and the others elect a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_leader_moves_leadership() {
    let c = Cluster::three(config()).await;
    c.write("a", "1").await;
    let old = c.wait_leader(&[1, 2, 3]).await;
    let mut admin = RaftAdminClient::connect(format!("http://{}", c.nodes[&old].addr))
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = admin
        .remove_member(NodeRequest { node_id: old })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.voters.contains(&old));
    let rest: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    let new = c.wait_leader(&rest).await;
    assert_ne!(new, old);
    c.node(new).write(b"set b 2".to_vec()).await.unwrap();
    eprintln!(
        "LEADER REMOVAL: leadership moved {old} -> {new} in {:?}",
        t0.elapsed()
    );
    let state = c.wait_converged(&rest).await;
    assert_eq!(state.map.len(), 2);
    c.shutdown().await;
}
