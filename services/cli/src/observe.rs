//! Metrics and health of a node process: the `--metrics-listen` server, the gRPC health
//! service, and what each role exports. The roles' wiring in `node` calls these hooks.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parsec_agent::agent::Agent;
use parsec_raft::RaftNode;
use parsec_telemetry::Health;
use parsec_telemetry::grpc::{RAFT_HEALTH_SERVICE, health_service};
use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};

use crate::node::NodeError;

/// Runs `node` with `/metrics`, `/healthz` and `/readyz` served on `listen` (when given).
pub async fn with_metrics(
    listen: Option<SocketAddr>,
    node: impl Future<Output = Result<(), NodeError>>,
) -> Result<(), NodeError> {
    let _server = match listen {
        Some(address) => Some(
            parsec_telemetry::serve_metrics(address, Arc::new(Health::global().clone()))
                .await
                .map_err(|e| NodeError::Listen {
                    address: e.address.to_string(),
                    source: e.source,
                })?,
        ),
        None => None,
    };
    node.await
}

/// gRPC health of a Raft member's server: "" and "parsec.raft" follow its readiness.
pub fn raft_health() -> HealthServer<impl HealthApi + use<>> {
    health_service(Health::global(), &["", RAFT_HEALTH_SERVICE])
}

/// gRPC health of an agent's server: "" follows its readiness.
pub fn agent_health() -> HealthServer<impl HealthApi + use<>> {
    health_service(Health::global(), &[""])
}

/// Exports a Raft member's metrics and readiness under `group`, and its disk usage.
pub fn raft_member<S: Send + Sync + 'static>(
    node: &Arc<RaftNode<S>>,
    group: &str,
    data_dir: &Path,
) {
    parsec_raft::metrics::export(node, group);
    parsec_telemetry::disk::watch_data_dir(node, group, data_dir);
}

/// How often an agent checks that it reaches the shards and the ticket machine.
const AGENT_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Exports an agent's metrics (at zero before its first transaction) and keeps its readiness:
/// ready while every shard answers and the ticket machine hands out tickets.
pub fn agent(agent: &Arc<Agent>) {
    parsec_agent::metrics::register_all(agent.runner_name());
    parsec_broker::metrics::register_all();
    parsec_telemetry::rpc::register_all();
    let component = Health::global().component("agent");
    let agent = Arc::downgrade(agent);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(AGENT_CHECK_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(agent) = agent.upgrade() else { return };
            let broker = agent.broker();
            // A ticket costs nothing but a number on a 64-bit time line; taking one proves the
            // ticket machine (or a cached range from it) serves this agent.
            match (broker.shard_status().await, broker.ticket().await) {
                (Ok(_), Ok(_)) => component.set_ready(),
                (Err(e), _) => component.set_not_ready(format!("shards: {e}")),
                (_, Err(e)) => component.set_not_ready(format!("ticket machine: {e}")),
            }
        }
    });
}
