//! Helpers shared by the multi-process tests: asking Raft members for their status, free ports.
#![allow(dead_code, clippy::unwrap_used)] // each test binary uses a part

use parsec_raft::pb::raft_admin_client::RaftAdminClient;
use parsec_raft::pb::{StatusReply, StatusRequest};
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

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
