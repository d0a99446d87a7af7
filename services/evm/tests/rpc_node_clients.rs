//! The Node client libraries (ethers 6, viem 2, web3.js 4; `tests/js`) against a server on the
//! fixture chain. `npm ci` runs once into the ignored `tests/js/node_modules`. Skipped, with a
//! message, when `node` or `npm` is missing or `PARSEC_SKIP_NODE_TESTS` is set.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use support::TestServer;
use tokio::process::Command;

const SCRIPTS: [&str; 3] = ["ethers.mjs", "viem.mjs", "web3.mjs"];
/// Bound on one script (each has its own 120 s bound inside) and on `npm ci`.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const NPM_CI_TIMEOUT: Duration = Duration::from_secs(600);

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

async fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn run(mut command: Command, timeout: Duration, what: &str) {
    command.kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {timeout:?}"))
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    println!("{what}: {}", stdout.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethers_viem_and_web3_work_against_the_server() {
    if std::env::var_os("PARSEC_SKIP_NODE_TESTS").is_some() {
        eprintln!("SKIPPED: PARSEC_SKIP_NODE_TESTS is set");
        return;
    }
    if !available("node").await || !available("npm").await {
        eprintln!("SKIPPED: node and npm are needed for the client library tests");
        return;
    }
    let dir = js_dir();
    // npm ci once; it leaves node_modules/.package-lock.json behind.
    if !dir.join("node_modules/.package-lock.json").exists() {
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        run(npm, NPM_CI_TIMEOUT, "npm ci").await;
    }
    let server = TestServer::start().await;
    // One after another: they share the chain and the deployer's nonces.
    for script in SCRIPTS {
        let mut node = Command::new("node");
        node.arg(script)
            .current_dir(&dir)
            .env("PARSEC_RPC_URL", server.url());
        run(node, SCRIPT_TIMEOUT, script).await;
    }
}
