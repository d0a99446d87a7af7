//! The HTTP server of `--metrics-listen`: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers) and `/readyz` (it is ready to serve, 503 with the reason otherwise).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use crate::health::Readiness;

/// The Prometheus text exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    pub source: std::io::Error,
}

/// A running metrics server. It stops when dropped.
pub struct MetricsServer {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (the real port when asked for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn router(readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Arc<dyn Readiness>>) -> impl IntoResponse {
    match readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics() -> impl IntoResponse {
    // Encoding walks every family under the registry's lock: keep it off the async workers.
    let text = tokio::task::spawn_blocking(crate::registry::render)
        .await
        .unwrap_or_else(|error| format!("# metrics unavailable: {error}\n"));
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text)
}

/// Binds `address` now (so that a taken port fails the start of the process, not later) and
/// serves in the background.
pub async fn serve_metrics(
    address: SocketAddr,
    readiness: Arc<dyn Readiness>,
) -> Result<MetricsServer, ListenError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ListenError { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| ListenError { address, source })?;
    let app = router(readiness);
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    tracing::info!(%address, "serving /metrics, /healthz and /readyz");
    Ok(MetricsServer { address, task })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::health::Health;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A minimal HTTP/1.0 GET: status code and body.
    async fn get(address: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn endpoints_answer_and_readiness_flips() {
        let health = Health::default();
        let server = serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(health.clone()))
            .await
            .unwrap();
        let address = server.address();
        assert_ne!(address.port(), 0);
        assert_eq!(get(address, "/healthz").await, (200, "ok\n".into()));

        let member = health.component("raft:shard-0");
        let (status, body) = get(address, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("raft:shard-0: starting"), "{body}");
        member.set_ready();
        assert_eq!(get(address, "/readyz").await.0, 200);
        member.set_not_ready("no leader");
        let (status, body) = get(address, "/readyz").await;
        assert_eq!((status, body.contains("no leader")), (503, true), "{body}");

        let rpc = crate::rpc::RpcMetrics::global();
        rpc.record("eth_chainId", std::time::Duration::from_millis(2), None);
        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("parsec_rpc_requests_total{method=\"eth_chainId\"}"),
            "{body}"
        );
        assert_eq!(get(address, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error() {
        let first = serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(Health::default()))
            .await
            .unwrap();
        let second = serve_metrics(first.address(), Arc::new(Health::default())).await;
        assert!(second.is_err());
    }
}
