//! Metrics and health of every Parsec process, one implementation for every role:
//!
//! - [`registry`]: the process's Prometheus registry, helpers to register metrics in it, and
//!   hooks that refresh gauges just before a scrape;
//! - [`health`]: readiness — named components (a Raft member, an agent) each ready or not, and
//!   the [`Readiness`] trait the endpoints ask;
//! - [`http`]: the HTTP server of `--metrics-listen` (`/metrics`, `/healthz`, `/readyz`);
//! - [`grpc`]: the standard gRPC health service (`grpc.health.v1`) mirroring readiness, for
//!   Kubernetes' native gRPC probes;
//! - [`disk`]: free and total bytes of a data directory's file system;
//! - [`rpc`]: instruments of the JSON-RPC front end and the EVM runner, ready to be recorded.

pub mod disk;
pub mod grpc;
pub mod health;
pub mod http;
pub mod registry;
pub mod rpc;

pub use health::{Component, Health, Readiness};
pub use http::{MetricsServer, serve_metrics};
pub use registry::{LATENCY_BUCKETS, on_scrape, registry, render};
pub use rpc::{EvmMetrics, RpcMetrics};
