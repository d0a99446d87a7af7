//! Mutual TLS across a multi-process cluster: `parsec cluster up --tls` gives every process its
//! own certificate of one CA; Raft replication, the broker's calls to shards and the ticket
//! machine, clients of the agents and the Raft admin API all run over it, and a peer without a
//! certificate of that CA gets nothing from any port.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{LocalCluster, PARSEC};
use parsec_proto as pb;
use parsec_raft::pb::StatusRequest;
use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_transport::{Authority, Tls};
use std::process::Command;
use std::time::Duration;

/// Every gRPC address of the cluster: Raft members (shards, ticket machine) and agents.
fn every_address(cluster: &LocalCluster) -> (Vec<String>, Vec<String>) {
    let topology = cluster.topology();
    let mut members: Vec<String> = topology
        .ticket_machine
        .replicas
        .iter()
        .map(|r| r.address.clone())
        .collect();
    for shard in &topology.shards {
        members.extend(shard.replicas.iter().map(|r| r.address.clone()));
    }
    let agents = topology.agents.iter().map(|a| a.address.clone()).collect();
    (members, agents)
}

/// Asks a Raft member for its admin status, as `parsec status` and the operator do.
async fn admin_status(address: &str, tls: Option<&Tls>) -> Result<String, String> {
    let channel = parsec_transport::endpoint(address, tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    RaftAdminClient::new(channel)
        .status(StatusRequest {})
        .await
        .map(|reply| reply.into_inner().role)
        .map_err(|status| format!("call: {status:?}"))
}

/// Asks an agent what it knows of the cluster.
async fn agent_status(address: &str, tls: Option<&Tls>) -> Result<(), String> {
    let channel = parsec_transport::endpoint(address, tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    pb::agent_client::AgentClient::new(channel)
        .cluster_status(pb::StatusRequest {})
        .await
        .map(|_| ())
        .map_err(|status| format!("call: {status:?}"))
}

fn foreign_identity() -> Tls {
    let stranger = Authority::new("not the cluster's CA").unwrap();
    let issued = stranger
        .issue(&["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    Tls::from_pem(
        stranger.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .unwrap()
}

/// A certificate of another CA, presented by a client that trusts the cluster's CA: the
/// server, not the client, must be the one to say no.
fn impostor_identity(cluster: &LocalCluster) -> Tls {
    let ca = std::fs::read(cluster.topology().tls.unwrap().ca_file).unwrap();
    let stranger = Authority::new("impostor").unwrap();
    let issued = stranger.issue(&["127.0.0.1".into()]).unwrap();
    Tls::from_pem(&ca, issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
}

#[test]
fn a_cluster_over_mutual_tls_serves_its_own_and_refuses_strangers() {
    // A replicated ticket machine and shard, so that Raft itself runs over TLS.
    let cluster =
        LocalCluster::up_args(&["--shards", "1", "--agents", "2", "--replicas", "3", "--tls"]);
    let topology = cluster.topology();
    let files = topology.tls.clone().expect("the topology names the CA");
    let own = Tls::load(&files).unwrap();

    // Payments through both agents: broker → shards and ticket machine, and Raft among the
    // members, all over mutual TLS; the audit checks every wallet.
    let output = Command::new(PARSEC)
        .args(["bench", "lua-pay", "--json", "--wallets", "200"])
        .args([
            "--concurrency",
            "32",
            "--payments",
            "2000",
            "--duration",
            "120",
        ])
        .arg("--topology")
        .arg(cluster.topology_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench over TLS failed: {stdout}{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.logs()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(report["committed"].as_u64().unwrap() >= 2_000, "{report}");
    assert_eq!(report["total_ok"], true, "{report}");
    assert_eq!(report["wallets_ok"], true, "{report}");

    // `parsec status` reaches every admin API with the topology's client certificate.
    let status = Command::new(PARSEC)
        .args(["status", "--json", "--topology"])
        .arg(cluster.topology_path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (members, agents) = every_address(&cluster);
    assert_eq!(members.len(), 6);
    let foreign = foreign_identity();
    let impostor = impostor_identity(&cluster);
    runtime.block_on(async {
        for address in &members {
            let role = admin_status(address, Some(&own)).await;
            assert!(role.is_ok(), "{address}: {role:?}");
            for (who, tls) in [
                ("plain", None),
                ("foreign CA", Some(&foreign)),
                ("impostor", Some(&impostor)),
            ] {
                let refused = admin_status(address, tls).await;
                assert!(refused.is_err(), "{who} reached the admin API of {address}");
            }
        }
        for address in &agents {
            agent_status(address, Some(&own)).await.unwrap();
            for (who, tls) in [
                ("plain", None),
                ("foreign CA", Some(&foreign)),
                ("impostor", Some(&impostor)),
            ] {
                let refused = agent_status(address, tls).await;
                assert!(refused.is_err(), "{who} reached agent {address}");
            }
        }
    });

    // Without the topology's certificate, `parsec status` reaches nothing and says so.
    let mut plain = topology.clone();
    plain.tls = None;
    let plain_path = cluster.topology_path().with_file_name("plain.yaml");
    plain.save(&plain_path).unwrap();
    let refused = Command::new(PARSEC)
        .args(["status", "--json", "--topology"])
        .arg(&plain_path)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "every process must refuse");
    let rows: serde_json::Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|row| row["role"] == "unreachable"),
        "{rows}"
    );

    // A missing key file is a clear start-up error, not a plain-text server.
    let missing = Command::new(PARSEC)
        .args(["status", "--topology"])
        .arg(cluster.topology_path())
        .args(["--tls-cert"])
        .arg(&files.cert_file)
        .args(["--tls-key", "/nonexistent/tls.key"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/tls.key"), "{stderr}");

    cluster.assert_all_running();
}
