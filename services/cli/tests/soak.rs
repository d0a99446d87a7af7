//! The soak, short: valid load (ERC-20 over JSON-RPC, Lua payments over gRPC) and every kind of
//! hostile traffic at once against a multi-process cluster over mutual TLS, for 45 seconds.
//! Every process must survive, both audits hold, every attack be refused (or, where legal,
//! answered) and memory stay bounded. The 30-minute run and its figures: README, "Hardening".

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{LocalCluster, PARSEC};
use std::process::Command;

/// No process of a small cluster needs more under this load; a leak driven by the hostile
/// traffic would cross it.
const MAX_RSS_KIB: u64 = 1 << 20;

#[test]
fn a_cluster_survives_valid_and_hostile_traffic_at_once() {
    let cluster =
        LocalCluster::up_args(&["--shards", "2", "--agents", "2", "--replicas", "3", "--tls"]);
    let output = Command::new(PARSEC)
        .args(["bench", "soak", "--json", "--duration", "45"])
        .arg("--topology")
        .arg(cluster.topology_path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "soak printed no report ({e}): {stdout}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            cluster.logs()
        )
    });
    let hostile = report["hostile"].as_array().unwrap();
    for tally in hostile {
        eprintln!(
            "{}: {} sent, {} refused, {} answered, {} unexpected {}",
            tally["attack"],
            tally["sent"],
            tally["refused"],
            tally["answered"],
            tally["unexpected"],
            tally["examples"]
        );
    }
    assert_eq!(hostile.len(), 13, "every kind of attack ran: {hostile:?}");
    for tally in hostile {
        assert!(tally["sent"].as_u64().unwrap() > 0, "{tally}");
        assert_eq!(tally["unexpected"], 0, "{tally}");
    }
    for workload in ["erc20", "lua"] {
        let valid = &report[workload];
        eprintln!("{workload}: {valid}");
        assert!(valid["committed"].as_u64().unwrap() > 0, "{valid}");
        assert_eq!(valid["total_ok"], true, "{valid}");
        assert_eq!(valid["wallets_ok"], true, "{valid}");
    }
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(
        processes.len(),
        11,
        "every process was watched: {processes:?}"
    );
    for process in processes {
        eprintln!(
            "{}: warm {} KiB, max {} KiB, end {} KiB",
            process["name"], process["warm_kib"], process["max_kib"], process["end_kib"]
        );
        assert_eq!(process["survived"], true, "{process}");
        assert!(
            process["max_kib"].as_u64().unwrap() < MAX_RSS_KIB,
            "{process}"
        );
    }
    assert!(output.status.success(), "exit {:?}", output.status);
    cluster.assert_all_running();
}
