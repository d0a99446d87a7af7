//! `parsec cluster up | down`: a local multi-process cluster on 127.0.0.1, each role its own
//! process speaking gRPC, for tests and for trying distributed mode on one machine.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parsec_core::config::{AgentEndpoint, RaftGroup, Replica, ShardGroup};
use parsec_core::{AgentId, ClusterConfig, NodeId, Settings, ShardId, TlsFiles};
use parsec_transport::Authority;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] parsec_core::ConfigError),
    #[error("a cluster is already running in {0} (run `parsec cluster down --dir {0}` first)")]
    AlreadyRunning(String),
    #[error("{name} exited during start-up ({status}); last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("{name} did not start listening on {address} within {timeout:?}; see {log}")]
    NotReady {
        name: String,
        address: String,
        timeout: Duration,
        log: String,
    },
    #[error("cannot find a free port: {0}")]
    NoPort(std::io::Error),
    #[error("the cluster has no process {0:?} (names: ticketer-N, shard-S-N, agent-N)")]
    UnknownProcess(String),
    #[error("{0} is still running")]
    StillRunning(String),
    #[error("making the cluster's TLS certificates: {0}")]
    Certificates(#[from] parsec_transport::CertError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One process of the cluster.
struct Process {
    name: String,
    args: Vec<String>,
    address: String,
    /// The Raft group it is a member of (`ticket-machine`, `shard-N`); none for agents.
    group: Option<String>,
}

/// Endpoints of a started cluster.
pub struct Started {
    pub topology: PathBuf,
    /// Every shard's replicas.
    pub shards: Vec<Vec<String>>,
    pub ticket_machine: Vec<String>,
    pub agents: Vec<String>,
    /// Every agent's Ethereum JSON-RPC endpoint.
    pub rpc: Vec<String>,
    /// Prometheus file-based service discovery of every process's `/metrics`.
    pub metrics_targets: PathBuf,
}

/// Where `up` writes the metrics address of every process, in Prometheus's file-based service
/// discovery format (`file_sd_configs`), labelled as the operator's ServiceMonitor labels pods.
const METRICS_TARGETS: &str = "metrics-targets.json";

/// The label Prometheus Operator gives a target from the `parsec.dev/group` Service label (the
/// ServiceMonitor's `targetLabels`): the same name locally keeps one set of rules and dashboards.
const GROUP_TARGET_LABEL: &str = "parsec_dev_group";

/// Process name → metrics address, from `DIR/metrics-targets.json` (none if absent).
fn metrics_addresses(dir: &Path) -> Result<BTreeMap<String, String>, ClusterError> {
    let path = dir.join(METRICS_TARGETS);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let groups: Vec<serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| io_error(&path)(std::io::Error::other(e)))?;
    Ok(groups
        .iter()
        .filter_map(|g| {
            let name = g["labels"]["pod"].as_str()?;
            let target = g["targets"][0].as_str()?;
            Some((name.to_owned(), target.to_owned()))
        })
        .collect())
}

/// Writes the metrics targets of `processes` (named in `addresses`) for Prometheus.
fn write_metrics_targets(
    dir: &Path,
    config: &ClusterConfig,
    processes: &[Process],
    addresses: &BTreeMap<String, String>,
) -> Result<PathBuf, ClusterError> {
    let targets: Vec<serde_json::Value> = processes
        .iter()
        .filter_map(|p| {
            let address = addresses.get(&p.name)?;
            let mut labels = serde_json::json!({"pod": p.name, "namespace": config.name});
            if let Some(group) = &p.group {
                labels[GROUP_TARGET_LABEL] = group.clone().into();
            }
            Some(serde_json::json!({"targets": [address], "labels": labels}))
        })
        .collect();
    let path = dir.join(METRICS_TARGETS);
    let text = serde_json::to_string_pretty(&targets)
        .map_err(|e| io_error(&path)(std::io::Error::other(e)))?;
    std::fs::write(&path, text).map_err(io_error(&path))?;
    Ok(path)
}

/// Ports free right now, for the cluster's processes to bind a moment later. They are taken
/// below the kernel's ephemeral range: in that moment an outgoing connection (whose local port
/// comes from that range) could otherwise take one, which busy machines and parallel tests do.
fn free_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    let Some((low, high)) = service_port_range() else {
        return ephemeral_ports(count);
    };
    let span = u32::from(high - low);
    // A random start keeps clusters started at the same time apart.
    let start = (std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::process::id(),
    ) % u64::from(span)) as u32;
    // Hold every listener until all are chosen, so the same port is not picked twice.
    let mut listeners = Vec::with_capacity(count);
    for offset in 0..span {
        if listeners.len() == count {
            break;
        }
        let port = low + ((start + offset) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    if listeners.len() < count {
        return ephemeral_ports(count);
    }
    ports_of(&listeners)
}

fn ports_of(listeners: &[TcpListener]) -> Result<Vec<u16>, ClusterError> {
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(ClusterError::NoPort)
        })
        .collect()
}

/// Ports from 10000 up to the start of the kernel's ephemeral range, when that leaves room.
fn service_port_range() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = range.split_whitespace().next()?.parse().ok()?;
    (ephemeral_low > 11_000).then_some((10_000, ephemeral_low))
}

/// Ports the kernel picks from its ephemeral range (where there is no other room).
fn ephemeral_ports(count: usize) -> Result<Vec<u16>, ClusterError> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(ClusterError::NoPort)?;
    ports_of(&listeners)
}

/// The topology of a local cluster: `ports` holds one port per process, ticket machine replicas
/// first, then each shard's replicas, then agents, then the agents' JSON-RPC ports. Raft members
/// get node ids 1..=R.
pub fn local_topology(shape: &Shape, ports: &[u16]) -> ClusterConfig {
    let address = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let group = |first: usize, replicas: u32| -> Vec<Replica> {
        (0..replicas as usize)
            .map(|r| Replica {
                node_id: NodeId(r as u64 + 1),
                address: address(first + r),
            })
            .collect()
    };
    let first_shard = shape.replicas as usize;
    let first_agent = first_shard + (shape.shards * shape.shard_replicas) as usize;
    let first_rpc = first_agent + shape.agents as usize;
    ClusterConfig {
        name: "local".into(),
        shards: (0..shape.shards)
            .map(|i| ShardGroup {
                id: ShardId(i),
                replicas: group(
                    first_shard + (i * shape.shard_replicas) as usize,
                    shape.shard_replicas,
                ),
            })
            .collect(),
        ticket_machine: RaftGroup {
            replicas: group(0, shape.replicas),
        },
        agents: (0..shape.agents)
            .map(|i| AgentEndpoint {
                id: AgentId(i),
                address: address(first_agent + i as usize),
                rpc_address: Some(address(first_rpc + i as usize)),
            })
            .collect(),
        settings: Settings::default(),
        tls: None,
    }
}

/// A Raft group member's process: `parsec <role> <group args> --node N --data-dir DATA/NAME`.
fn raft_member(
    role: &str,
    name: String,
    group: String,
    group_args: &[String],
    replica: &Replica,
    topology: &str,
    data: &Path,
) -> Process {
    let mut args = vec![role.to_owned(), "--topology".into(), topology.to_owned()];
    args.extend_from_slice(group_args);
    args.extend([
        "--node".into(),
        replica.node_id.0.to_string(),
        "--data-dir".into(),
        data.join(&name).display().to_string(),
    ]);
    Process {
        args,
        name,
        address: replica.address.clone(),
        group: Some(group),
    }
}

fn processes(config: &ClusterConfig, topology: &Path, data: &Path) -> Vec<Process> {
    let topology = topology.display().to_string();
    let mut out: Vec<Process> = config
        .ticket_machine
        .replicas
        .iter()
        .map(|replica| {
            let name = format!("ticketer-{}", replica.node_id.0);
            let group = "ticket-machine".to_owned();
            raft_member("ticketer", name, group, &[], replica, &topology, data)
        })
        .collect();
    for group in &config.shards {
        let shard_args = ["--shard".to_owned(), group.id.0.to_string()];
        for replica in &group.replicas {
            let name = format!("shard-{}-{}", group.id.0, replica.node_id.0);
            out.push(raft_member(
                "shard",
                name,
                group.id.to_string(),
                &shard_args,
                replica,
                &topology,
                data,
            ));
        }
    }
    for agent in &config.agents {
        let mut args = vec![
            "agent".into(),
            "--topology".into(),
            topology.clone(),
            "--agent".into(),
            agent.id.0.to_string(),
        ];
        if let Some(rpc) = &agent.rpc_address {
            // A local cluster is a development network: its agents fund the development
            // accounts (once; whichever agent comes first).
            args.extend([
                "--rpc-listen".into(),
                rpc.clone(),
                "--dev-accounts".into(),
                "true".into(),
            ]);
        }
        out.push(Process {
            name: format!("agent-{}", agent.id.0),
            args,
            address: agent.address.clone(),
            group: None,
        });
    }
    out
}

/// `processes` with `--metrics-listen` added for those that have a metrics address.
fn with_metrics(mut processes: Vec<Process>, addresses: &BTreeMap<String, String>) -> Vec<Process> {
    for process in &mut processes {
        if let Some(address) = addresses.get(&process.name) {
            process
                .args
                .extend(["--metrics-listen".into(), address.clone()]);
        }
    }
    processes
}

/// The shape of a local cluster.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub shards: u32,
    pub agents: u32,
    /// Members of the ticket machine's Raft group.
    pub replicas: u32,
    /// Members of each shard's Raft group.
    pub shard_replicas: u32,
    /// Log entries between Raft snapshots.
    pub snapshot_every: u64,
    /// Mutual TLS between every process (certificates made in `DIR/tls`).
    pub tls: bool,
}

/// Where `up --tls` keeps the CA and every process's certificate and key.
const TLS_DIR: &str = "tls";
/// The certificate the topology names for the cluster's clients (`parsec status`, benches).
const CLIENT_CERTIFICATE: &str = "client";

/// Makes a CA, a certificate for every process and one for clients in `dir`; returns the
/// topology's `tls` (the CA and the client certificate).
fn issue_certificates(dir: &Path, processes: &[Process]) -> Result<TlsFiles, ClusterError> {
    let authority = Authority::new("Parsec local cluster CA")?;
    // Every process listens on 127.0.0.1; `localhost` serves clients that dial by that name.
    let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    for process in processes {
        authority.write_issued(dir, &process.name, &names)?;
    }
    Ok(authority.write_issued(dir, CLIENT_CERTIFICATE, &names)?)
}

/// `processes` with their own certificate (made by [`issue_certificates`]) when the cluster
/// uses TLS.
fn with_certificates(mut processes: Vec<Process>, config: &ClusterConfig) -> Vec<Process> {
    let Some(dir) = config.tls.as_ref().and_then(|tls| tls.ca_file.parent()) else {
        return processes;
    };
    for process in &mut processes {
        let file = |extension: &str| {
            dir.join(format!("{}.{extension}", process.name))
                .display()
                .to_string()
        };
        let (cert, key) = (file("crt"), file("key"));
        process
            .args
            .extend(["--tls-cert".into(), cert, "--tls-key".into(), key]);
    }
    processes
}

/// Starts process `name` of the cluster in `dir` again (after it died or was killed), from its
/// data directory, or from nothing with `wipe`; returns once it accepts connections.
pub fn start_process(dir: &Path, name: &str, wipe: bool) -> Result<(), ClusterError> {
    let topology = dir.join("topology.yaml");
    let config = ClusterConfig::load(&topology)?;
    let data = dir.join("data");
    let metrics = metrics_addresses(dir)?;
    let process = with_metrics(processes(&config, &topology, &data), &metrics);
    let process = with_certificates(process, &config)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ClusterError::UnknownProcess(name.to_owned()))?;
    let pids = dir.join("pids");
    if live_pids(&pids)?
        .iter()
        .any(|(_, path)| path.file_stem().is_some_and(|stem| stem == name))
    {
        return Err(ClusterError::StillRunning(name.to_owned()));
    }
    if wipe {
        let own = data.join(name);
        if own.exists() {
            std::fs::remove_dir_all(&own).map_err(io_error(&own))?;
        }
    }
    let exe = std::env::current_exe().map_err(io_error(Path::new("parsec")))?;
    let (mut child, log) = spawn(&process, &exe, &dir.join("logs"), &pids)?;
    wait_ready(&process, &mut child, &log)
}

/// Starts one process in its own process group, its output appended to its log; records its pid.
fn spawn(
    process: &Process,
    exe: &Path,
    logs: &Path,
    pids: &Path,
) -> Result<(Child, PathBuf), ClusterError> {
    let log_path = logs.join(format!("{}.log", process.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io_error(&log_path))?;
    let err = log.try_clone().map_err(io_error(&log_path))?;
    let child = Command::new(exe)
        .args(&process.args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        // Its own process group: the cluster outlives this command and a Ctrl-C to it.
        .process_group(0)
        .spawn()
        .map_err(io_error(exe))?;
    let pid_path = pids.join(format!("{}.pid", process.name));
    std::fs::write(&pid_path, child.id().to_string()).map_err(io_error(&pid_path))?;
    Ok((child, log_path))
}

/// Starts a cluster in `dir` and returns once every process accepts connections.
pub fn up(dir: &Path, shape: Shape) -> Result<Started, ClusterError> {
    let processes_needed =
        (shape.replicas + shape.shards * shape.shard_replicas + shape.agents) as usize;
    let ports_needed = processes_needed + shape.agents as usize;
    let pids = dir.join("pids");
    if live_pids(&pids)?.into_iter().next().is_some() {
        return Err(ClusterError::AlreadyRunning(dir.display().to_string()));
    }
    let logs = dir.join("logs");
    let data = dir.join("data");
    for folder in [dir, &logs, &pids, &data] {
        std::fs::create_dir_all(folder).map_err(io_error(folder))?;
    }
    // One port for each process's service and each agent's JSON-RPC, then one for each
    // process's metrics.
    let ports = free_ports(ports_needed + processes_needed)?;
    let (ports, metrics_ports) = ports.split_at(ports_needed);
    let mut config = local_topology(&shape, ports);
    config.settings.raft_snapshot_every = shape.snapshot_every;
    config.settings.raft_logs_kept = config.settings.raft_logs_kept.min(shape.snapshot_every);
    let topology = dir.join("topology.yaml");
    // The processes' arguments name the topology by its absolute path: write it once to learn
    // the path, and again below if TLS adds to it.
    config.save(&topology)?;
    let topology = topology.canonicalize().map_err(io_error(&topology))?;

    let exe = std::env::current_exe().map_err(io_error(Path::new("parsec")))?;
    let mut started: Vec<(Process, Child, PathBuf)> = Vec::new();
    let data = data.canonicalize().map_err(io_error(&data))?;
    let all = processes(&config, &topology, &data);
    if shape.tls {
        let tls_dir = dir.join(TLS_DIR);
        std::fs::create_dir_all(&tls_dir).map_err(io_error(&tls_dir))?;
        let tls_dir = tls_dir.canonicalize().map_err(io_error(&tls_dir))?;
        config.tls = Some(issue_certificates(&tls_dir, &all)?);
        config.save(&topology)?;
    }
    let metrics: BTreeMap<String, String> = all
        .iter()
        .zip(metrics_ports)
        .map(|(p, port)| (p.name.clone(), format!("127.0.0.1:{port}")))
        .collect();
    let metrics_targets = write_metrics_targets(dir, &config, &all, &metrics)?;
    for process in with_certificates(with_metrics(all, &metrics), &config) {
        let (child, log_path) = spawn(&process, &exe, &logs, &pids)?;
        started.push((process, child, log_path));
    }
    let mut failure = None;
    for (process, child, log) in &mut started {
        if let Err(error) = wait_ready(process, child, log) {
            failure = Some(error);
            break;
        }
    }
    if let Some(error) = failure {
        // Still our children: kill and reap them here rather than leave zombies to `down`.
        for (_, child, _) in &mut started {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = down(dir);
        return Err(error);
    }
    Ok(Started {
        topology,
        shards: config
            .shards
            .iter()
            .map(|s| s.replicas.iter().map(|r| r.address.clone()).collect())
            .collect(),
        ticket_machine: config
            .ticket_machine
            .replicas
            .iter()
            .map(|r| r.address.clone())
            .collect(),
        agents: config.agents.iter().map(|a| a.address.clone()).collect(),
        rpc: config
            .agents
            .iter()
            .filter_map(|a| a.rpc_address.clone())
            .collect(),
        metrics_targets,
    })
}

const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn wait_ready(process: &Process, child: &mut Child, log: &Path) -> Result<(), ClusterError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let address: SocketAddr = process
        .address
        .parse()
        .map_err(|_| ClusterError::NotReady {
            name: process.name.clone(),
            address: process.address.clone(),
            timeout: READY_TIMEOUT,
            log: log.display().to_string(),
        })?;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ClusterError::Exited {
                name: process.name.clone(),
                status: status.to_string(),
                log: log.display().to_string(),
                tail: tail(log, 20),
            });
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotReady {
                name: process.name.clone(),
                address: process.address.clone(),
                timeout: READY_TIMEOUT,
                log: log.display().to_string(),
            });
        }
        // Polling a port that is not open yet: there is no event to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether `pid` runs. A killed process whose parent is gone may linger as a zombie until
/// something reaps it; it counts as dead.
fn is_alive(pid: Pid) -> bool {
    if kill(pid, None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name, which may itself contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    state != Some("Z")
}

/// The pids of the processes of the local cluster in `dir` that run now (none if `dir` holds
/// no local cluster).
pub fn running_pids(dir: &Path) -> Vec<u32> {
    running_processes(dir)
        .into_iter()
        .map(|(_, pid)| pid)
        .collect()
}

/// The processes of the local cluster in `dir` that run now, by name (`shard-0-1`, …).
pub fn running_processes(dir: &Path) -> Vec<(String, u32)> {
    let mut processes: Vec<(String, u32)> = live_pids(&dir.join("pids"))
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(pid, path)| {
            let name = path.file_stem()?.to_string_lossy().into_owned();
            Some((name, u32::try_from(pid.as_raw()).ok()?))
        })
        .collect();
    processes.sort();
    processes
}

/// Pids of the cluster's processes that are still alive, with their pid files.
fn live_pids(pids: &Path) -> Result<Vec<(Pid, PathBuf)>, ClusterError> {
    let Ok(entries) = std::fs::read_dir(pids) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        match pid {
            Some(pid) if is_alive(Pid::from_raw(pid)) => out.push((Pid::from_raw(pid), path)),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(out)
}

/// Stops every process of the cluster in `dir`: SIGTERM, then SIGKILL after a grace period.
/// Returns how many processes were stopped.
pub fn down(dir: &Path) -> Result<usize, ClusterError> {
    let running = live_pids(&dir.join("pids"))?;
    for (pid, _) in &running {
        let _ = kill(*pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<_> = running.iter().filter(|(pid, _)| is_alive(*pid)).collect();
        if alive.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for (pid, _) in alive {
                let _ = kill(*pid, Signal::SIGKILL);
            }
            break;
        }
        // Waiting for processes we are not the parent of: nothing to wait on but their pid.
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, path) in &running {
        let _ = std::fs::remove_file(path);
    }
    Ok(running.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_outside_the_ephemeral_range() {
        let ports = free_ports(40).expect("free ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), 40, "{ports:?}");
        if let Some((low, high)) = service_port_range() {
            assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
        }
    }
}
