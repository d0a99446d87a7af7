//! Ethereum JSON-RPC over a [`Chain`](crate::chain::Chain): geth's methods, parameters, errors
//! and JSON shapes, over HTTP and WebSocket on one port.
//!
//! - [`server`]: [`serve`], its [`RpcOptions`] and [`RpcHandle`];
//! - `api`: the methods;
//! - `convert`: sealed blocks, transactions, receipts and logs as alloy's RPC types;
//! - `log_filter`: geth's log filter semantics; `logs`: range queries with caps;
//! - `filters`: installed filters and their expiry; `pubsub`: `eth_subscribe` and the
//!   gap-free block feed;
//! - `params`, `fees`, `error`, `ids`: parameter checks, fee history, error mapping, ids;
//! - `middleware`: clear invalid-params messages, concurrent batches.

mod api;
mod clients;
mod convert;
mod error;
mod fees;
mod filters;
mod ids;
mod log_filter;
mod logs;
mod middleware;
mod params;
mod pubsub;
pub mod server;

pub use clients::RateLimit;
pub use error::revert_reason;
pub use server::{InProcessRpc, RpcError, RpcHandle, RpcOptions, serve};
