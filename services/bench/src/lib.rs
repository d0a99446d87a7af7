//! Load generators for Parsec. Each reports throughput, latency percentiles and an end-of-run
//! audit of the state it changed.

pub mod client;
pub mod cpu;
pub mod erc20;
pub mod floor;
pub mod lua_pay;
pub mod raw_grpc;
pub mod report;
pub mod run;
pub mod signer;
pub mod soak;

pub use client::{AgentPool, ClientError};
pub use erc20::{Erc20Error, Erc20Options, run_erc20};
pub use lua_pay::{LuaPayOptions, run_lua_pay};
pub use report::{Cost, Report};
pub use soak::{SoakOptions, SoakReport, run_soak};
