//! The bodies of Parsec's fuzz targets, one module per target. Each `run(data)` takes the raw
//! bytes libFuzzer produces and panics when an oracle fails; the cargo-fuzz binaries in
//! `fuzz/fuzz_targets` only call them, and `tests/replay.rs` runs them over the committed
//! corpus and regressions, so plain `cargo test` keeps checking every input ever found.
//!
//! Setup (runtimes, in-process clusters) may unwrap: a harness that cannot start is a bug of
//! the harness, not a finding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod grpc;
pub mod json_rpc;
pub mod lock_table;
pub mod lua;
pub mod raft;
pub mod seeds;
pub mod tx_decode;
pub mod wire;

/// A target's body: panics when an oracle fails.
pub type Body = fn(&[u8]);

/// The fuzz targets, by the name of their cargo-fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Body)] = &[
    ("tx_decode", tx_decode::run),
    ("lock_table", lock_table::run),
    ("lua", lua::run),
    ("grpc", grpc::run),
    ("json_rpc", json_rpc::run),
    ("raft", raft::run),
];

/// One Tokio runtime for the whole process, created on first use: targets that need async
/// services block on it input after input.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}
