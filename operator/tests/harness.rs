//! The local-process harness: takes the pod specs the operator renders for a small cluster and
//! runs each container's command as a local process, with every pod's DNS name mapped to its own
//! 127.0.0.x address (the topology is rewritten, and `--listen 0.0.0.0:P` becomes
//! `--listen 127.0.0.x:P`, since all "pods" share one network namespace). The cluster must come
//! up and answer JSON-RPC: proof that what the operator writes actually boots.
//!
//! A second cluster asks for mutual TLS (`spec.tls`): the harness issues the Secret's three files
//! from a CA of its own, for every pod's address, and the same checks must pass over TLS.
//!
//! Needs a `parsec` binary (`cargo build -p parsec-cli`; or set `PARSEC_BIN`). When the binary is
//! missing, or lacks a flag the operator renders, the test is skipped with a message saying which.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parsec_operator::build::Environment;
use parsec_operator::render::{parse_cluster, render};
use serde_json::Value;

const CLUSTER: &str = r#"
apiVersion: parsec.dev/v1alpha1
kind: ParsecCluster
metadata: {name: local, namespace: harness}
spec:
  image: {repository: parsec, tag: local}
  shards: {count: 2, replicas: 1}
  ticketMachine: {replicas: 1}
  agents: {replicas: 1}
  chain: {devAccounts: true}
"#;

const TLS_CLUSTER: &str = r#"
apiVersion: parsec.dev/v1alpha1
kind: ParsecCluster
metadata: {name: local, namespace: harness}
spec:
  image: {repository: parsec, tag: local}
  shards: {count: 2, replicas: 1}
  ticketMachine: {replicas: 3}
  agents: {replicas: 1}
  chain: {devAccounts: true}
  tls: {secretName: local-tls}
"#;

/// Where the pods find the TLS Secret's files.
const TLS_MOUNT: &str = "/etc/parsec/tls";

fn parsec_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PARSEC_BIN") {
        return Some(PathBuf::from(path));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/parsec");
    path.exists().then_some(path)
}

/// Flags of `parsec <role>` that the rendered args use but the binary does not know.
fn missing_flags(bin: &Path, role: &str, args: &[String]) -> Vec<String> {
    let help = Command::new(bin)
        .args([role, "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    args.iter()
        .filter(|a| a.starts_with("--"))
        .filter(|a| !help.contains(a.as_str()))
        .cloned()
        .collect()
}

struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A pod to run: its name, its container args and environment.
struct LocalPod {
    name: String,
    role: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    ip: String,
}

fn container_pods(objects: &[Value]) -> Vec<(String, Value, u64)> {
    let mut pods = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind != "StatefulSet" && kind != "Deployment" {
            continue;
        }
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let replicas = object["spec"]["replicas"].as_u64().unwrap_or(1);
        let container = object["spec"]["template"]["spec"]["containers"][0].clone();
        for ordinal in 0..replicas {
            pods.push((format!("{name}-{ordinal}"), container.clone(), ordinal));
        }
    }
    pods
}

fn json_rpc(addr: &str, method: &str) -> Option<Value> {
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":[]}}"#);
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (_, json) = response.split_once("\r\n\r\n")?;
    serde_json::from_str(json.trim()).ok()
}

#[test]
fn rendered_pods_boot_a_cluster_that_serves_json_rpc() {
    boot_rendered_cluster(CLUSTER, false);
}

#[test]
fn rendered_pods_boot_a_cluster_over_mutual_tls() {
    boot_rendered_cluster(TLS_CLUSTER, true);
}

/// Writes the Secret's `ca.crt`, `tls.crt` and `tls.key` into `dir`: one certificate for every
/// pod address, as cert-manager's wildcard names would cover them.
fn issue_secret(dir: &Path, ips: &[String]) {
    let authority = parsec_transport::Authority::new("harness CA").unwrap();
    let issued = authority.issue(ips).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.crt"), authority.ca_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), issued.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), issued.key_pem).unwrap();
}

fn boot_rendered_cluster(yaml: &str, tls: bool) {
    let Some(bin) = parsec_binary() else {
        eprintln!(
            "SKIPPED: no parsec binary (build it with `cargo build -p parsec-cli` or set PARSEC_BIN)"
        );
        return;
    };
    let cluster = parse_cluster(yaml, "harness").unwrap();
    let objects = render(&cluster, &Environment::default()).unwrap();
    let topology = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "local-topology")
        .unwrap()["data"]["topology.yaml"]
        .as_str()
        .unwrap()
        .to_string();

    // Every pod gets an address; its DNS name maps to it.
    let dir = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    let mut hosts = BTreeMap::new();
    for (index, (name, container, ordinal)) in container_pods(&objects).into_iter().enumerate() {
        // The two tests run at once: each has its own subnet of 127/8.
        let ip = format!("127.0.{}.{}", u8::from(tls), index + 2);
        let args: Vec<String> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        let mut env = BTreeMap::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let key = e["name"].as_str().unwrap().to_string();
            let value = match (
                e["value"].as_str(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Some(v), _) => v.to_string(),
                (None, Some("metadata.name")) => name.clone(),
                (None, Some(_)) => ordinal.to_string(), // the pod-index label
                _ => continue,
            };
            env.insert(key, value);
        }
        let sts = name.rsplit_once('-').unwrap().0.to_string();
        hosts.insert(format!("{name}.{sts}.harness.svc"), ip.clone());
        pods.push(LocalPod {
            role: args[0].clone(),
            name,
            args,
            env,
            ip,
        });
    }

    let mut missing = Vec::new();
    for pod in &pods {
        for flag in missing_flags(&bin, &pod.role, &pod.args) {
            missing.push(format!("parsec {} {flag}", pod.role));
        }
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} lacks flags the operator renders: {}",
            bin.display(),
            missing.join(", ")
        );
        return;
    }

    let mut local_topology = topology.clone();
    for (host, ip) in &hosts {
        local_topology = local_topology.replace(host.as_str(), ip);
    }
    assert_eq!(local_topology.contains(TLS_MOUNT), tls, "{local_topology}");
    if tls {
        let secret = dir.path().join("tls");
        let ips: Vec<String> = pods.iter().map(|pod| pod.ip.clone()).collect();
        issue_secret(&secret, &ips);
        local_topology = local_topology.replace(TLS_MOUNT, secret.to_str().unwrap());
    }
    let topology_path = dir.path().join("topology.yaml");
    std::fs::write(&topology_path, &local_topology).unwrap();

    let mut processes = Processes(Vec::new());
    let mut agent_rpc = None;
    for pod in &pods {
        let data = dir.path().join(&pod.name);
        std::fs::create_dir_all(&data).unwrap();
        let args: Vec<String> = pod
            .args
            .iter()
            .map(|a| {
                a.replace("$(POD_NAME)", &pod.name)
                    .replace(
                        "$(POD_INDEX)",
                        pod.env.get("POD_INDEX").map_or("0", String::as_str),
                    )
                    .replace("0.0.0.0:", &format!("{}:", pod.ip))
                    .replace("/etc/parsec/topology.yaml", topology_path.to_str().unwrap())
                    .replace("/var/lib/parsec", data.to_str().unwrap())
            })
            .collect();
        if pod.role == "agent" {
            agent_rpc = Some(format!("{}:8545", pod.ip));
        }
        let log = std::fs::File::create(dir.path().join(format!("{}.log", pod.name))).unwrap();
        let child = Command::new(&bin)
            .args(&args)
            .envs(
                pod.env
                    .iter()
                    .filter(|(k, _)| k.as_str() != "PARSEC_LOG_FORMAT"),
            )
            .current_dir(&data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        processes.0.push((pod.name.clone(), child));
    }

    let agent_rpc = agent_rpc.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let answer = loop {
        for (name, child) in &mut processes.0 {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join(format!("{name}.log")))
                    .unwrap_or_default();
                panic!("{name} exited with {status}:\n{log}");
            }
        }
        if let Some(answer) = json_rpc(&agent_rpc, "eth_chainId") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON-RPC answer from {agent_rpc} within 90 s"
        );
        // Polling a condition with a deadline, not sleeping for an outcome.
        std::thread::sleep(Duration::from_millis(200));
    };
    // The chain id the operator rendered (0xcbdc by default).
    assert_eq!(answer["result"], "0xcbdc", "{answer}");
}
