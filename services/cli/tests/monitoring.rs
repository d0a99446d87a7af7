//! The monitoring contract, proven on a real Prometheus: a local multi-process cluster started
//! with metrics listeners, a `prometheus` server scraping it (Debian package `prometheus`), load
//! from `parsec bench lua-pay`, then through Prometheus's HTTP API:
//!
//! - every query of every dashboard panel (variables substituted) returns data;
//! - every alert rule's expression evaluates without error;
//! - the leader-loss alert fires when a shard's leader is killed (`kill -9`) and clears once it
//!   is back (read from Prometheus's own `ALERTS` series, the rules file loaded as shipped).
//!
//! Also: `/readyz` and gRPC health of the processes, and an agent started by `--name`.
//! Says SKIPPED when `prometheus` is not installed (scripts/test.sh installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{PARSEC, free_port};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The namespace label `parsec cluster up` gives its targets (the topology's name).
const NAMESPACE: &str = "local";
/// Deadline of every wait on Prometheus (scrapes every second, rules evaluated every second).
const WAIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Percent-encoding of a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET: status and body (`None` when nothing listens).
fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let socket: SocketAddr = address.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Polls `check` until it returns `Some`, or panics with `what` after `WAIT`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Polling an external server's state: there is no event to wait on.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A real Prometheus server in a temporary directory, killed when dropped.
struct Prometheus {
    child: Child,
    address: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &Path) -> Self {
        let rules = repo().join("manifests/monitoring/parsec-rules.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: parsec\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
                rules.canonicalize().unwrap().display(),
                targets.display()
            ),
        )
        .unwrap();
        // Prometheus cannot listen on port 0: take a port that is free now.
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus { child, address };
        wait_for("prometheus to be ready", || {
            http_get(&prometheus.address, "/-/ready").filter(|(status, _)| *status == 200)
        });
        prometheus
    }

    /// `/api/v1/query`: the result vector, or Prometheus's error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(
            &self.address,
            &format!("/api/v1/query?query={}", encode(expr)),
        )
        .ok_or("prometheus did not answer")?;
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if json["status"] != "success" {
            return Err(format!("{status}: {} {}", json["errorType"], json["error"]));
        }
        let data = &json["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                data["result"].as_array().cloned().unwrap_or_default()
            }
            // A scalar or string result is one value.
            _ => vec![data["result"].clone()],
        })
    }

    fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr).ok()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local cluster started by `parsec cluster up`, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    extra: Vec<Child>,
}

impl Cluster {
    fn up() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(PARSEC)
            .args([
                "cluster",
                "up",
                "--shards",
                "2",
                "--agents",
                "2",
                "--replicas",
                "1",
            ])
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster up: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Cluster {
            dir,
            extra: Vec::new(),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// (process name, metrics address) of every target `cluster up` wrote.
    fn targets(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path("metrics-targets.json")).unwrap();
        let groups: Vec<Value> = serde_json::from_str(&text).unwrap();
        groups
            .iter()
            .map(|g| {
                (
                    g["labels"]["pod"].as_str().unwrap().to_string(),
                    g["targets"][0].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn kill9(&self, name: &str) {
        let pid = std::fs::read_to_string(self.path(&format!("pids/{name}.pid"))).unwrap();
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -9 {name}");
    }

    fn start(&self, name: &str) {
        let output = Command::new(PARSEC)
            .args(["cluster", "start", "--dir"])
            .arg(self.dir.path())
            .arg(name)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "cluster start {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// ERC-20 transfers over the agents' JSON-RPC endpoints: data for the JSON-RPC, EVM and
    /// block panels.
    fn erc20(&self) -> Value {
        self.run_bench(&[
            "erc20",
            "--accounts",
            "50",
            "--concurrency",
            "8",
            "--transfers",
            "300",
            "--duration",
            "120",
        ])
    }

    fn bench(&self, seconds: u32) -> Value {
        let seconds = seconds.to_string();
        self.run_bench(&[
            "lua-pay",
            "--wallets",
            "200",
            "--concurrency",
            "32",
            "--hot",
            "0.2",
            "--duration",
            &seconds,
        ])
    }

    /// `parsec bench ARGS --json` against this cluster: its report.
    fn run_bench(&self, args: &[&str]) -> Value {
        let output = Command::new(PARSEC)
            .arg("bench")
            .args(args)
            .arg("--json")
            .arg("--topology")
            .arg(self.path("topology.yaml"))
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "bench {}: {}",
            args[0],
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.extra {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new(PARSEC)
            .args(["cluster", "down", "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

/// Every (dashboard, panel title, expression) of `manifests/monitoring/*.json`, with the
/// dashboard variables substituted as Grafana would for this cluster.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let dir = repo().join("manifests/monitoring");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "1m")
                    .replace("$namespace", NAMESPACE)
                    // Multi-value variables with "All" selected.
                    .replace("$group", ".*")
                    .replace("$cluster", ".*");
                out.push((
                    name.clone(),
                    panel["title"].as_str().unwrap().to_string(),
                    expr,
                ));
            }
        }
    }
    out
}

/// Queries that cannot have data in a local cluster: the operator does not run here, and a
/// healthy run answers no JSON-RPC error (`parsec_rpc_errors_total` series appear on the first
/// error). They must still evaluate without error.
fn data_expected(expr: &str) -> bool {
    !expr.contains("parsec_operator_") && !expr.contains("parsec_rpc_errors_total")
}

fn alert_rules() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo().join("manifests/monitoring/parsec-rules.yaml")).unwrap();
    let file: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    file["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|rule| {
            (
                rule["alert"].as_str().unwrap().to_string(),
                rule["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn firing(prometheus: &Prometheus, alert: &str, group: &str) -> Vec<Value> {
    prometheus
        .query(&format!(
            "ALERTS{{alertname=\"{alert}\", alertstate=\"firing\", group=\"{group}\", namespace=\"{NAMESPACE}\"}}"
        ))
        .unwrap()
}

#[test]
fn dashboards_and_alerts_work_on_a_real_prometheus() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: `prometheus` is not installed (Debian package prometheus; scripts/test.sh \
             installs it with apt-get)"
        );
        return;
    }
    let mut cluster = Cluster::up();
    let targets = cluster.targets();
    assert_eq!(
        targets.len(),
        5,
        "1 ticket machine, 2 shards, 2 agents: {targets:?}"
    );

    // Every process answers /healthz and becomes ready.
    for (name, address) in &targets {
        assert_eq!(
            http_get(address, "/healthz").map(|r| r.0),
            Some(200),
            "{name} /healthz"
        );
        wait_for(&format!("{name} /readyz"), || {
            http_get(address, "/readyz").filter(|(status, _)| *status == 200)
        });
    }
    // gRPC health of a shard member: its Raft service is SERVING.
    let topology = parsec_core::ClusterConfig::load(&cluster.path("topology.yaml")).unwrap();
    let shard0 = topology.shards[0].replicas[0].address.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let serving = runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{shard0}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: "parsec.raft".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
    });
    assert_eq!(serving, tonic_health::ServingStatus::Serving as i32);

    // An agent known by name, outside the topology, serving and ready next to the others.
    let named_metrics = format!("127.0.0.1:{}", free_port());
    let named = Command::new(PARSEC)
        .args(["agent", "--topology"])
        .arg(cluster.path("topology.yaml"))
        .args(["--name", "parsec-agent-7d9f8b-x2k4p", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(["--metrics-listen", &named_metrics])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.path("logs/named-agent.log")).unwrap())
        .spawn()
        .unwrap();
    cluster.extra.push(named);
    wait_for("the named agent to be ready", || {
        http_get(&named_metrics, "/readyz").filter(|(status, _)| *status == 200)
    });

    let scratch = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(scratch.path(), &cluster.path("metrics-targets.json"));
    let count = targets.len() as f64;
    wait_for("every target scraped and up", || {
        (prometheus.value("count(up{job=\"parsec\"} == 1)") == Some(count)).then_some(())
    });
    // The dashboards' namespace variable (label_values(parsec_raft_term, namespace)).
    let (_, labels) = http_get(
        &prometheus.address,
        &format!(
            "/api/v1/label/namespace/values?{}",
            encode_match("parsec_raft_term")
        ),
    )
    .unwrap();
    assert!(labels.contains(&format!("\"{NAMESPACE}\"")), "{labels}");

    let report = cluster.bench(8);
    let committed = report["committed"].as_u64().unwrap();
    assert!(committed > 0, "{report}");
    eprintln!("bench: {report}");
    let erc20 = cluster.erc20();
    assert_eq!(erc20["total_ok"], true, "{erc20}");
    eprintln!("bench erc20: {erc20}");
    // The agents' last counts are scraped.
    wait_for("JSON-RPC requests in Prometheus", || {
        let seen = prometheus.value(&format!(
            "sum(parsec_rpc_requests_total{{namespace=\"{NAMESPACE}\", method=\"eth_sendRawTransaction\"}})"
        ))?;
        (seen >= 300.0).then_some(())
    });
    wait_for("committed transactions in Prometheus", || {
        let seen = prometheus.value(&format!(
            "sum(parsec_agent_transactions_total{{namespace=\"{NAMESPACE}\", outcome=\"committed\"}})"
        ))?;
        (seen >= committed as f64).then_some(())
    });

    let mut empty = Vec::new();
    let mut errors = Vec::new();
    let (mut with_data, mut exempt) = (0, 0);
    for (dashboard, panel, expr) in dashboard_queries() {
        match prometheus.query(&expr) {
            Err(error) => errors.push(format!("{dashboard} / {panel}: {error}\n  {expr}")),
            Ok(result) if result.is_empty() && data_expected(&expr) => {
                empty.push(format!("{dashboard} / {panel}:\n  {expr}"))
            }
            Ok(result) if result.is_empty() => exempt += 1,
            Ok(_) => with_data += 1,
        }
    }
    eprintln!(
        "dashboard queries: {with_data} with data, {exempt} without (operator, JSON-RPC errors)"
    );
    assert!(
        errors.is_empty(),
        "dashboard queries failing:\n{}",
        errors.join("\n")
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    assert!(with_data >= 40, "{with_data} queries with data");

    let rules = alert_rules();
    assert!(rules.len() >= 10, "{rules:?}");
    for (alert, expr) in &rules {
        if let Err(error) = prometheus.query(expr) {
            panic!("alert {alert} does not evaluate: {error}\n{expr}");
        }
    }
    eprintln!("{} alert expressions evaluated", rules.len());

    // Leader loss: the only member of shard 0 dies; its group has no leader until it is back.
    let alert = "ParsecRaftGroupWithoutLeader";
    assert!(
        firing(&prometheus, alert, "shard-0").is_empty(),
        "fires before any fault"
    );
    cluster.kill9("shard-0-1");
    let killed = Instant::now();
    wait_for("the leader-loss alert to fire", || {
        (!firing(&prometheus, alert, "shard-0").is_empty()).then_some(())
    });
    eprintln!("{alert} fired {:?} after kill -9", killed.elapsed());
    assert!(
        firing(&prometheus, alert, "shard-1").is_empty(),
        "only shard-0 lost its leader"
    );
    cluster.start("shard-0-1");
    let restarted = Instant::now();
    wait_for("the leader-loss alert to clear", || {
        firing(&prometheus, alert, "shard-0")
            .is_empty()
            .then_some(())
    });
    eprintln!(
        "{alert} cleared {:?} after the restart",
        restarted.elapsed()
    );
    // The alert may clear on the first scrape of the restarted member, before its Raft node has
    // registered its gauges: wait for the leader to show.
    let leader_query =
        format!("max(parsec_raft_is_leader{{namespace=\"{NAMESPACE}\", group=\"shard-0\"}})");
    wait_for("shard-0 to report a leader again", || {
        prometheus
            .value(&leader_query)
            .filter(|leader| *leader == 1.0)
    });
}

fn encode_match(series: &str) -> String {
    format!("match[]={}", encode(series))
}
