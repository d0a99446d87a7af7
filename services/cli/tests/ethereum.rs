//! Ethereum tools against the real system: ethers 6, viem 2 and web3.js 4 (Node, scripts in
//! services/evm/tests/js; `accounting.mjs` checks fees to the wei, a mined revert, 50 concurrent
//! transfers from 10 accounts and getLogs by block hash) against `parsec dev`, and `parsec bench erc20` across the two agents of
//! a multi-process cluster — both agents stamp blocks, the token total is conserved and every
//! account holds exactly what the acknowledged transfers say.
//!
//! The Node part is skipped, with a message, when `node` or `npm` is missing or
//! `PARSEC_SKIP_NODE_TESTS` is set; `npm ci` runs once into the ignored node_modules.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{PARSEC, free_port};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const SCRIPTS: [&str; 4] = ["ethers.mjs", "viem.mjs", "web3.mjs", "accounting.mjs"];

fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../evm/tests/js")
}

/// Whether `address` answers `eth_blockNumber` over HTTP.
fn answers_rpc(address: &str) -> bool {
    use std::io::{Read, Write};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}"#;
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut reply = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
        && reply.contains("\"result\"")
}

/// Waits until `address` serves JSON-RPC (bounded).
fn wait_for_rpc(address: &str, log: &Path) {
    let deadline = Instant::now() + WAIT;
    while !answers_rpc(address) {
        assert!(
            Instant::now() < deadline,
            "no JSON-RPC on {address}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `parsec dev`, killed on drop.
struct Dev {
    child: Child,
    rpc: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rpc = format!("127.0.0.1:{}", free_port());
        let log_path = dir.path().join("dev.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(PARSEC)
            .args(["dev", "--in-memory", "--block-interval-ms", "100"])
            // A base fee, so that the accounting script sees fees charged to the wei.
            .args(["--base-fee-wei", "1000000000"])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--rpc-listen", &rpc])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for_rpc(&rpc, &log_path);
        Self {
            child,
            rpc,
            _dir: dir,
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs the Node client scripts against `rpc`; false when Node is not available.
fn node_clients(rpc: &str) -> bool {
    if std::env::var_os("PARSEC_SKIP_NODE_TESTS").is_some() {
        eprintln!("SKIPPED: PARSEC_SKIP_NODE_TESTS is set: the Node client libraries did not run");
        return false;
    }
    if !available("node") || !available("npm") {
        eprintln!("SKIPPED: node and npm are needed for the client library tests");
        return false;
    }
    let dir = js_dir();
    // The tests run in parallel threads: one `npm ci` at a time, or they trip over each other.
    static NPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _npm = NPM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !dir.join("node_modules/.package-lock.json").exists() {
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
            "npm ci",
        );
    }
    // One after another: they share the chain and the deployer's nonces.
    for script in SCRIPTS {
        let out = run(
            Command::new("node")
                .arg(script)
                .current_dir(&dir)
                .env("PARSEC_RPC_URL", format!("http://{rpc}")),
            script,
        );
        eprintln!("{script}: {}", out.trim());
    }
    true
}

fn bench_erc20(args: &[&str]) -> serde_json::Value {
    let out = run(
        Command::new(PARSEC)
            .args(["bench", "erc20", "--json"])
            .args(args),
        "parsec bench erc20",
    );
    serde_json::from_str(out.trim()).expect("one JSON object")
}

fn assert_exact(report: &serde_json::Value) {
    assert!(report["committed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["total_ok"], true, "{report}");
    assert_eq!(report["wallets_ok"], true, "{report}");
}

#[test]
fn ethereum_client_libraries_and_the_erc20_bench_work_against_parsec_dev() {
    let dev = Dev::start();
    node_clients(&dev.rpc);
    let report = bench_erc20(&[
        "--rpc",
        &dev.rpc,
        "--accounts",
        "100",
        "--concurrency",
        "16",
        "--transfers",
        "1000",
        "--duration",
        "300",
    ]);
    eprintln!("erc20 on parsec dev: {report}");
    assert_exact(&report);
    assert_eq!(report["committed"], 1000, "{report}");
}

#[test]
fn erc20_transfers_through_two_agents_of_a_multi_process_cluster() {
    let dir = tempfile::tempdir().unwrap();
    run(
        Command::new(PARSEC)
            .args(["cluster", "up", "--shards", "2", "--agents", "2", "--dir"])
            .arg(dir.path()),
        "parsec cluster up",
    );
    struct Down<'a>(&'a Path);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = Command::new(PARSEC)
                .args(["cluster", "down", "--dir"])
                .arg(self.0)
                .output();
        }
    }
    let _down = Down(dir.path());
    let topology = dir.path().join("topology.yaml");
    let report = bench_erc20(&[
        "--topology",
        topology.to_str().unwrap(),
        "--accounts",
        "200",
        "--concurrency",
        "32",
        "--transfers",
        "2000",
        "--duration",
        "300",
    ]);
    eprintln!("erc20 on a 2-shard, 2-agent cluster: {report}");
    assert_exact(&report);
    assert!(
        report["raft_entries_per_transfer"].as_f64().is_some(),
        "{report}"
    );
    // Both agents serve the same chain: what one committed, the other lists in its blocks.
    let config = parsec_core::ClusterConfig::load(&topology).unwrap();
    let second = config.agents[1].rpc_address.clone().unwrap();
    node_clients(&second);
}
