//! `parsec status`: one row per process of a cluster — Raft role, leader, term and indexes for
//! Raft groups, lock-table figures for shards, reachability for agents.

use parsec_core::ClusterConfig;
use parsec_proto as pb;
use parsec_raft::pb::{StatusRequest, raft_admin_client::RaftAdminClient};
use parsec_transport::Tls;
use serde::Serialize;
use std::time::Duration;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub group: String,
    /// The Raft node id (none for agents).
    pub node: Option<u64>,
    pub address: String,
    /// leader / follower / candidate / learner (Raft), serving (unreplicated), unreachable.
    pub role: String,
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub snapshot_bytes: Option<u64>,
    /// fsyncs of the Raft log since the process started.
    pub log_syncs: Option<u64>,
    pub keys: Option<u64>,
    pub tickets: Option<u64>,
    pub locked_keys: Option<u64>,
    pub error: Option<String>,
}

async fn channel(address: &str, tls: Option<&Tls>) -> Result<Channel, String> {
    parsec_transport::endpoint(address, tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .map_err(|e| parsec_core::error_chain(&e))
}

/// Connects to `address` and makes one call; a failure of either is the error text.
async fn ask<T, F, Fut>(address: &str, tls: Option<&Tls>, call: F) -> Result<T, String>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let channel = channel(address, tls).await?;
    call(channel)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| status.message().to_owned())
}

fn unreachable(group: &str, node: Option<u64>, address: &str, error: String) -> Row {
    Row {
        group: group.to_owned(),
        node,
        address: address.to_owned(),
        role: "unreachable".into(),
        error: Some(error),
        ..Row::default()
    }
}

async fn raft_row(group: &str, node: u64, address: &str, tls: Option<&Tls>) -> Row {
    let status = ask(address, tls, |channel| async move {
        RaftAdminClient::new(channel).status(StatusRequest {}).await
    })
    .await;
    match status {
        Ok(s) => Row {
            group: group.to_owned(),
            node: Some(node),
            address: address.to_owned(),
            role: s.role,
            leader: s.leader_id,
            term: Some(s.term),
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            snapshot_bytes: Some(s.snapshot_size_bytes),
            log_syncs: Some(s.log_syncs),
            ..Row::default()
        },
        Err(error) => unreachable(group, Some(node), address, error),
    }
}

/// A shard replica: its Raft member's status plus the shard's own figures.
async fn shard_row(group: &str, node: u64, address: &str, tls: Option<&Tls>) -> Row {
    let mut row = raft_row(group, node, address, tls).await;
    if row.error.is_some() {
        return row;
    }
    let status = ask(address, tls, |channel| async move {
        pb::shard_client::ShardClient::new(channel)
            .status(pb::StatusRequest {})
            .await
    })
    .await;
    match status {
        Ok(s) => {
            row.keys = Some(s.keys);
            row.tickets = Some(s.tickets);
            row.locked_keys = Some(s.locked_keys);
            row
        }
        Err(error) => unreachable(group, Some(node), address, error),
    }
}

async fn agent_row(id: u32, address: &str, tls: Option<&Tls>) -> Row {
    let group = format!("agent-{id}");
    let status = ask(address, tls, |channel| async move {
        pb::agent_client::AgentClient::new(channel)
            .cluster_status(pb::StatusRequest {})
            .await
    })
    .await;
    match status {
        Ok(_) => Row {
            group,
            address: address.to_owned(),
            role: "serving".into(),
            ..Row::default()
        },
        Err(error) => unreachable(&group, None, address, error),
    }
}

/// Asks every process of `config` for its status, all at once (over mutual TLS with `tls`).
pub async fn collect(config: &ClusterConfig, tls: Option<&Tls>) -> Vec<Row> {
    let ticketers = config
        .ticket_machine
        .replicas
        .iter()
        .map(|r| raft_row("ticket-machine", r.node_id.0, &r.address, tls));
    let shards = config.shards.iter().flat_map(|group| {
        let name = format!("shard-{}", group.id.0);
        group
            .replicas
            .iter()
            .map(move |r| (name.clone(), r.node_id.0, r.address.clone()))
    });
    let mut rows = futures::future::join_all(ticketers).await;
    rows.extend(
        futures::future::join_all(shards.map(|(name, node, address)| async move {
            shard_row(&name, node, &address, tls).await
        }))
        .await,
    );
    rows.extend(
        futures::future::join_all(
            config
                .agents
                .iter()
                .map(|a| agent_row(a.id.0, &a.address, tls)),
        )
        .await,
    );
    rows
}

/// What the shard groups' Raft logs did between two status collections: entries committed (by
/// leaders) and fsyncs (by every replica).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RaftWork {
    pub entries: u64,
    pub fsyncs: u64,
}

/// The shards' Raft work in `after` since `before` (replicas missing from either are skipped).
pub fn shard_raft_work(before: &[Row], after: &[Row]) -> RaftWork {
    let shard = |row: &&Row| row.group.starts_with("shard-") && row.error.is_none();
    let mut work = RaftWork::default();
    for row in after.iter().filter(shard) {
        let Some(earlier) = before
            .iter()
            .filter(shard)
            .find(|b| b.group == row.group && b.node == row.node)
        else {
            continue;
        };
        work.fsyncs += row
            .log_syncs
            .unwrap_or(0)
            .saturating_sub(earlier.log_syncs.unwrap_or(0));
        if row.role == "leader" {
            work.entries += row
                .commit_index
                .unwrap_or(0)
                .saturating_sub(earlier.commit_index.unwrap_or(0));
        }
    }
    work
}

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let cell = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut lines = vec![
        [
            "GROUP", "NODE", "ADDRESS", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "SNAPSHOT",
            "KEYS", "TICKETS", "LOCKED",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for row in rows {
        lines.push(vec![
            row.group.clone(),
            row.node
                .map_or_else(|| "-".to_owned(), |node| node.to_string()),
            row.address.clone(),
            row.role.clone(),
            cell(row.leader),
            cell(row.term),
            cell(row.commit_index),
            cell(row.applied_index),
            cell(row.snapshot_index),
            cell(row.keys),
            cell(row.tickets),
            cell(row.locked_keys),
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for row in rows.iter().filter(|r| r.error.is_some()) {
        out.push_str(&format!(
            "{} {} ({}): {}\n",
            row.group,
            row.node.map_or_else(String::new, |node| node.to_string()),
            row.address,
            row.error.as_deref().unwrap_or_default()
        ));
    }
    out
}
