//! `parsec`: run a Parsec node, a whole cluster in one process, a local multi-process cluster,
//! or a benchmark.

// glibc's malloc showed as 10% of a node's CPU under load (BENCHMARKS.md); mimalloc's thread
// caches serve the many short-lived request buffers far cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod chain;
mod cluster;
mod lua;
mod node;
mod observe;
mod status;
mod tls;

use clap::{Args, Parser, Subcommand};
use parsec_bench::{AgentPool, LuaPayOptions, run_lua_pay};
use parsec_core::{AgentId, ClusterConfig, NodeId, ShardId};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Where `parsec dev` serves its agent, and where clients look for it by default.
const DEV_AGENT: &str = "127.0.0.1:7400";
/// Where `parsec dev` serves Ethereum JSON-RPC (the port every Ethereum tool tries first).
const DEV_RPC: &str = "127.0.0.1:8545";

#[derive(Parser)]
#[command(
    name = "parsec",
    version,
    about = "Parallel smart-contract execution over sharded, replicated storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything (shards, ticket machine, agent) in this process.
    Dev {
        /// Address of the agent's gRPC endpoint (Lua contracts).
        #[arg(long, default_value = DEV_AGENT)]
        listen: SocketAddr,
        /// Number of shards.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
        /// Where the shards keep their Raft logs and snapshots (state survives restarts).
        #[arg(long, default_value = "parsec-data/dev", conflicts_with = "in_memory")]
        data_dir: PathBuf,
        /// Keep nothing on disk: the state is gone when the process ends.
        #[arg(long)]
        in_memory: bool,
        /// Where Ethereum clients connect (JSON-RPC over HTTP and WebSocket).
        #[arg(long, default_value = DEV_RPC)]
        rpc_listen: SocketAddr,
        /// Length of a logical block in milliseconds.
        #[arg(long, env = "PARSEC_BLOCK_INTERVAL_MS")]
        block_interval_ms: Option<u64>,
        #[command(flatten)]
        chain: chain::ChainArgs,
        /// Serve /metrics, /healthz and /readyz here.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Serve one replica of one shard (Raft-replicated).
    Shard {
        #[command(flatten)]
        node: NodeArgs,
        /// Where this replica keeps its Raft log and snapshots.
        #[arg(long, default_value = "parsec-data/shard")]
        data_dir: PathBuf,
        #[arg(long)]
        shard: u32,
        #[arg(long = "node", default_value_t = 1)]
        node_id: u64,
    },
    /// Serve one replica of the ticket machine (Raft-replicated).
    Ticketer {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long = "node", default_value_t = 1)]
        node_id: u64,
        /// Where this replica keeps its Raft log and snapshots.
        #[arg(long, default_value = "parsec-data/ticketer")]
        data_dir: PathBuf,
        /// Length of a logical block in milliseconds (default: the topology's setting).
        #[arg(long, env = "PARSEC_BLOCK_INTERVAL_MS")]
        block_interval_ms: Option<u64>,
    },
    /// Serve one agent.
    Agent {
        #[command(flatten)]
        node: NodeArgs,
        /// The agent's number in the topology (it listens on the address listed there).
        #[arg(long, required_unless_present = "name", conflicts_with = "name")]
        agent: Option<u32>,
        /// Run as an agent known by this name (e.g. its pod name) instead of a number in the
        /// topology: its id is a stable hash of the name (see `AgentId::from_name`); needs
        /// --listen.
        #[arg(long, requires = "listen")]
        name: Option<String>,
        /// Serve Ethereum JSON-RPC (HTTP and WebSocket) here.
        #[arg(long)]
        rpc_listen: Option<SocketAddr>,
        #[command(flatten)]
        chain: chain::ChainArgs,
    },
    /// Start or stop a local multi-process cluster on 127.0.0.1.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Deploy, call and read Lua contracts on an agent (default: `parsec dev`).
    Lua {
        /// The agent's gRPC endpoint.
        #[arg(long, global = true, default_value = DEV_AGENT)]
        agent: String,
        /// Print JSON (values as 0x-hex).
        #[arg(long, global = true)]
        json: bool,
        #[command(flatten)]
        tls: tls::TlsArgs,
        #[command(subcommand)]
        command: lua::LuaCommand,
    },
    /// Show every process of a cluster: Raft role, leader, term and indexes, shard figures.
    Status {
        /// The cluster topology (YAML).
        #[arg(long, alias = "cluster", env = "PARSEC_TOPOLOGY")]
        topology: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tls: tls::TlsArgs,
    },
    /// Run a load generator against an agent, a cluster or `parsec dev`.
    Bench {
        #[command(subcommand)]
        workload: Workload,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// The cluster topology (YAML).
    #[arg(long, env = "PARSEC_TOPOLOGY")]
    topology: PathBuf,
    /// Listen here instead of on the address the topology gives.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Start shards, a ticket machine and agents as separate processes; returns when all are up.
    Up {
        /// Folder for the topology, logs and pid files.
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
        shards: u32,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
        agents: u32,
        /// Replicas of each Raft group (every shard and the ticket machine).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
        replicas: u32,
        /// Replicas of each shard's group, when it should differ from --replicas.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
        shard_replicas: Option<u32>,
        /// Raft log entries between snapshots.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        snapshot_every: u64,
        /// Mutual TLS between every process: a CA and a certificate per process are made in
        /// DIR/tls, and the topology's `tls` names the CA and a client certificate (for
        /// `parsec status`, `bench`, `lua`).
        #[arg(long)]
        tls: bool,
    },
    /// Start one process of the cluster in DIR again (after it died or was killed).
    Start {
        #[arg(long)]
        dir: PathBuf,
        /// The process: ticketer-N, shard-S-N or agent-N (as in DIR/pids).
        process: String,
        /// Delete its data first: it rejoins empty (remove it from its Raft group before, and
        /// add it back after).
        #[arg(long)]
        wipe: bool,
    },
    /// Stop the cluster started in DIR.
    Down {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum Workload {
    /// Signed Lua payments between wallets, closed loop, audited at the end.
    LuaPay(LuaPayArgs),
    /// Signed ERC-20 transfers over Ethereum JSON-RPC, closed loop, audited at the end.
    Erc20(Erc20Args),
    /// Valid load and hostile traffic at once against a cluster, watching every process's
    /// memory; fails (exit 4) if a process dies, an audit fails or an attack is not refused.
    Soak(SoakArgs),
}

#[derive(Args)]
struct SoakArgs {
    /// The cluster (a local one: its processes are watched through its pid files).
    #[arg(long, env = "PARSEC_TOPOLOGY")]
    topology: PathBuf,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// ERC-20 transfers and Lua payments in flight (each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Hostile requests in flight.
    #[arg(long, default_value_t = 8)]
    hostile_concurrency: usize,
    /// Accounts and wallets of the valid load.
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Print one JSON object (with every memory sample) instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Args)]
struct Erc20Args {
    /// JSON-RPC endpoints (URLs or host:port, comma-separated). Default: `parsec dev`'s.
    #[arg(long, value_delimiter = ',', conflicts_with = "topology")]
    rpc: Vec<String>,
    /// Send transfers to every agent of this topology that serves JSON-RPC.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// Accounts holding the token (transfers go between random pairs).
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many transfers.
    #[arg(long)]
    transfers: Option<u64>,
    /// Private key (hex) that deploys the token; default: the first development account.
    #[arg(long, env = "PARSEC_BENCH_DEPLOYER_KEY")]
    deployer_key: Option<String>,
    /// Sign each transfer in the measured window instead of ahead of it.
    #[arg(long)]
    sign_inline: bool,
    /// Share of transfers (0..=1) sent to one hot account: a contention knob.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    hot: f64,
    /// Charge the measured window's CPU to these server processes (with the `--topology` of a
    /// local cluster: its own, from its pid files).
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    /// For the Raft figures of a `--topology` cluster that uses mutual TLS.
    #[command(flatten)]
    tls: tls::TlsArgs,
}

#[derive(Args)]
struct LuaPayArgs {
    /// Agents to send payments to (host:port, comma-separated). Default: `parsec dev`'s agent.
    #[arg(long, value_delimiter = ',', conflicts_with = "topology")]
    agents: Vec<String>,
    /// Send payments to every agent of this topology.
    #[arg(long)]
    topology: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000)]
    wallets: usize,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many committed payments.
    #[arg(long)]
    payments: Option<u64>,
    /// Share of payments (0..=1) sent to one hot wallet.
    #[arg(long, default_value_t = 0.0)]
    hot: f64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: tls::TlsArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn load(path: &std::path::Path) -> Result<ClusterConfig, String> {
    ClusterConfig::load(path).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Dev {
            listen,
            shards,
            data_dir,
            in_memory,
            rpc_listen,
            block_interval_ms,
            chain,
            metrics_listen,
        } => {
            let storage = if in_memory {
                node::DevStorage::Memory
            } else {
                node::DevStorage::Disk(data_dir)
            };
            let dev_accounts = chain.dev_accounts_or(true);
            let rpc = node::RpcSetup {
                listen: rpc_listen,
                chain: chain.settings(dev_accounts),
                fund: dev_accounts.then(|| (chain::DEV_ACCOUNTS.to_vec(), chain::dev_balance())),
            };
            runtime()?
                .block_on(observe::with_metrics(
                    metrics_listen,
                    node::run_dev(listen, shards, storage, rpc, block_interval_ms),
                ))
                .map_err(|e| e.to_string())?
        }
        Command::Shard {
            node,
            data_dir,
            shard,
            node_id,
        } => {
            let config = load(&node.topology)?;
            let tls = node.tls.load(config.tls.as_ref())?;
            runtime()?
                .block_on(observe::with_metrics(
                    node.metrics_listen,
                    node::run_shard(
                        &config,
                        ShardId(shard),
                        NodeId(node_id),
                        &data_dir,
                        node.listen,
                        tls.as_ref(),
                    ),
                ))
                .map_err(|e| e.to_string())?
        }
        Command::Ticketer {
            node,
            node_id,
            data_dir,
            block_interval_ms,
        } => {
            let mut config = load(&node.topology)?;
            if let Some(interval) = block_interval_ms {
                config.settings.block_interval_ms = interval;
            }
            let tls = node.tls.load(config.tls.as_ref())?;
            runtime()?
                .block_on(observe::with_metrics(
                    node.metrics_listen,
                    node::run_ticketer(
                        &config,
                        NodeId(node_id),
                        &data_dir,
                        node.listen,
                        tls.as_ref(),
                    ),
                ))
                .map_err(|e| e.to_string())?
        }
        Command::Agent {
            node,
            agent,
            name,
            rpc_listen,
            chain,
        } => {
            let config = load(&node.topology)?;
            let tls = node.tls.load(config.tls.as_ref())?;
            let id = match (agent, &name) {
                (Some(number), _) => AgentId(number),
                (None, Some(name)) => AgentId::from_name(name),
                (None, None) => return Err("give --agent N or --name NAME".into()),
            };
            if let Some(name) = &name {
                tracing::info!(%name, agent = %id, "agent id derived from its name");
            }
            let dev_accounts = chain.dev_accounts_or(false);
            let rpc = rpc_listen.map(|listen| node::RpcSetup {
                listen,
                chain: chain.settings(dev_accounts),
                fund: dev_accounts.then(|| (chain::DEV_ACCOUNTS.to_vec(), chain::dev_balance())),
            });
            runtime()?
                .block_on(observe::with_metrics(
                    node.metrics_listen,
                    node::run_agent(&config, id, node.listen, rpc, tls.as_ref()),
                ))
                .map_err(|e| e.to_string())?
        }
        Command::Cluster { command } => return cluster_command(command),
        Command::Status {
            topology,
            json,
            tls,
        } => {
            let config = load(&topology)?;
            let tls = tls.load(config.tls.as_ref())?;
            let rows = runtime()?.block_on(status::collect(&config, tls.as_ref()));
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", status::table(&rows));
            }
            if rows.iter().any(|row| row.error.is_some()) {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Lua {
            agent,
            json,
            tls,
            command,
        } => {
            let tls = tls.load(None)?;
            runtime()?.block_on(lua::run(&agent, command, json, tls.as_ref()))?
        }
        Command::Bench {
            workload: Workload::LuaPay(args),
        } => return bench_lua_pay(args),
        Command::Bench {
            workload: Workload::Erc20(args),
        } => return bench_erc20(args),
        Command::Bench {
            workload: Workload::Soak(args),
        } => return bench_soak(args),
    }
    Ok(ExitCode::SUCCESS)
}

fn cluster_command(command: ClusterCommand) -> Result<ExitCode, String> {
    match command {
        ClusterCommand::Up {
            dir,
            shards,
            agents,
            replicas,
            shard_replicas,
            snapshot_every,
            tls,
        } => {
            let shape = cluster::Shape {
                shards,
                agents,
                replicas,
                shard_replicas: shard_replicas.unwrap_or(replicas),
                snapshot_every,
                tls,
            };
            let started = cluster::up(&dir, shape).map_err(|e| e.to_string())?;
            println!("cluster up in {}", dir.display());
            println!("  topology:       {}", started.topology.display());
            println!("  ticket machine: {}", started.ticket_machine.join(", "));
            for (i, shard) in started.shards.iter().enumerate() {
                println!("  shard {i}:        {}", shard.join(", "));
            }
            for (i, agent) in started.agents.iter().enumerate() {
                println!("  agent {i}:        {agent}");
            }
            for (i, rpc) in started.rpc.iter().enumerate() {
                println!("  JSON-RPC {i}:     http://{rpc}");
            }
            println!("  metrics:        {}", started.metrics_targets.display());
            println!("  logs:           {}", dir.join("logs").display());
            println!("stop it with: parsec cluster down --dir {}", dir.display());
        }
        ClusterCommand::Down { dir } => {
            let stopped = cluster::down(&dir).map_err(|e| e.to_string())?;
            println!("stopped {stopped} processes");
        }
        ClusterCommand::Start { dir, process, wipe } => {
            cluster::start_process(&dir, &process, wipe).map_err(|e| e.to_string())?;
            println!("{process} started");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a benchmark; with a topology, measures the shards' Raft work (entries, fsyncs) around it.
async fn with_raft_work(
    topology: Option<&ClusterConfig>,
    tls: Option<&parsec_transport::Tls>,
    run: impl Future<Output = Result<parsec_bench::Report, String>>,
) -> Result<(parsec_bench::Report, Option<status::RaftWork>), String> {
    let before = match topology {
        Some(config) => Some(status::collect(config, tls).await),
        None => None,
    };
    let report = run.await?;
    let raft = match (topology, before) {
        (Some(config), Some(before)) => Some(status::shard_raft_work(
            &before,
            &status::collect(config, tls).await,
        )),
        _ => None,
    };
    Ok((report, raft))
}

/// A benchmark's exit code: 3 when its audit failed.
fn audit_exit_code(report: &parsec_bench::Report) -> ExitCode {
    if report.total_ok && report.wallets_ok != Some(false) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a fraction between 0 and 1")),
    }
}

fn bench_erc20(args: Erc20Args) -> Result<ExitCode, String> {
    let topology = args.topology.as_deref().map(load).transpose()?;
    let tls = args
        .tls
        .load(topology.as_ref().and_then(|t| t.tls.as_ref()))?;
    let endpoints: Vec<String> = match (&topology, args.rpc.is_empty()) {
        (Some(config), _) => config
            .agents
            .iter()
            .filter_map(|a| a.rpc_address.clone())
            .collect(),
        (None, true) => vec![DEV_RPC.to_owned()],
        (None, false) => args.rpc.clone(),
    };
    if endpoints.is_empty() {
        return Err("the topology lists no agent serving JSON-RPC (rpcAddress)".into());
    }
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let options = parsec_bench::Erc20Options {
        accounts: args.accounts,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        max_transfers: args.transfers,
        progress: !args.json,
        deployer_key: args.deployer_key,
        presign: !args.sign_inline,
        hot_fraction: args.hot,
        server_pids: match &args.topology {
            // A local cluster keeps its pids beside its topology; another has none here.
            Some(path) => cluster::running_pids(path.parent().unwrap_or(Path::new("."))),
            None => args.server_pids.clone(),
        },
    };
    let (report, raft) =
        runtime()?.block_on(with_raft_work(topology.as_ref(), tls.as_ref(), async {
            parsec_bench::run_erc20(endpoints, options)
                .await
                .map_err(|e| e.to_string())
        }))?;
    let per_transfer = |n: u64| (report.committed > 0).then(|| n as f64 / report.committed as f64);
    let raft_entries = raft.and_then(|w| per_transfer(w.entries));
    let fsyncs = raft.and_then(|w| per_transfer(w.fsyncs));
    if args.json {
        let json = serde_json::json!({
            "committed": report.committed,
            "failed": report.failed,
            "errors": report.errors,
            "duration_s": report.duration_s,
            "tps": report.tps,
            "p50_ms": report.p50_ms,
            "p99_ms": report.p99_ms,
            "p999_ms": report.p999_ms,
            "max_ms": report.max_ms,
            "raft_entries_per_transfer": raft_entries,
            "fsyncs_per_transfer": fsyncs,
            "server_cpu_us_per_transfer": report.cost.and_then(|c| c.server_cpu_us),
            "client_cpu_us_per_transfer": report.cost.and_then(|c| c.client_cpu_us),
            "floor_us": report.cost.and_then(|c| c.floor),
            "server_cpu_over_floor": report.cost.and_then(|c| c.overhead()),
            "total_ok": report.total_ok,
            "wallets_ok": report.wallets_ok,
        });
        println!("{json}");
    } else {
        println!("{}", report.summary());
        if let (Some(entries), Some(fsyncs)) = (raft_entries, fsyncs) {
            println!(
                "shard Raft logs: {entries:.2} entries per transfer (leaders), {fsyncs:.2} fsyncs \
                 per transfer (all replicas)"
            );
        }
    }
    Ok(audit_exit_code(&report))
}

fn bench_lua_pay(args: LuaPayArgs) -> Result<ExitCode, String> {
    let topology = args.topology.as_deref().map(load).transpose()?;
    let tls = args
        .tls
        .load(topology.as_ref().and_then(|t| t.tls.as_ref()))?;
    let agents = match (&topology, args.agents.is_empty()) {
        (Some(config), _) => config.agents.iter().map(|a| a.address.clone()).collect(),
        (None, true) => vec![DEV_AGENT.to_owned()],
        (None, false) => args.agents.clone(),
    };
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let options = LuaPayOptions {
        wallets: args.wallets,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.duration),
        max_payments: args.payments,
        hot_fraction: args.hot,
        progress: !args.json,
        ..LuaPayOptions::default()
    };
    options.validate().map_err(|e| e.to_string())?;
    let (report, raft) = runtime()?.block_on(async {
        let pool = AgentPool::connect(&agents, tls.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        with_raft_work(topology.as_ref(), tls.as_ref(), async {
            run_lua_pay(pool, options).await.map_err(|e| e.to_string())
        })
        .await
    })?;
    let per_payment = |n: u64| (report.committed > 0).then(|| n as f64 / report.committed as f64);
    let raft_entries_per_payment = raft.and_then(|w| per_payment(w.entries));
    let fsyncs_per_payment = raft.and_then(|w| per_payment(w.fsyncs));
    if args.json {
        let json = serde_json::json!({
            "committed": report.committed,
            "failed": report.failed,
            "errors": report.errors,
            "retries": report.retries,
            "duration_s": report.duration_s,
            "tps": report.tps,
            "p50_ms": report.p50_ms,
            "p99_ms": report.p99_ms,
            "p999_ms": report.p999_ms,
            "max_ms": report.max_ms,
            "rpcs_per_payment": report.rpcs_per_tx,
            "raft_entries_per_payment": raft_entries_per_payment,
            "fsyncs_per_payment": fsyncs_per_payment,
            "total_ok": report.total_ok,
            "wallets_ok": report.wallets_ok,
        });
        println!("{json}");
    } else {
        println!("{}", report.summary());
        if let (Some(entries), Some(fsyncs)) = (raft_entries_per_payment, fsyncs_per_payment) {
            println!(
                "shard Raft logs: {entries:.2} entries per payment (leaders), {fsyncs:.2} fsyncs \
                 per payment (all replicas)"
            );
        }
    }
    Ok(audit_exit_code(&report))
}

fn bench_soak(args: SoakArgs) -> Result<ExitCode, String> {
    let config = load(&args.topology)?;
    let tls = args.tls.load(config.tls.as_ref())?;
    if !(args.duration.is_finite() && args.duration > 0.0) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let dir = args.topology.parent().unwrap_or(Path::new("."));
    let processes: Vec<parsec_bench::soak::Watched> = cluster::running_processes(dir)
        .into_iter()
        .map(|(name, pid)| parsec_bench::soak::Watched { name, pid })
        .collect();
    if processes.is_empty() {
        eprintln!(
            "warning: no pid files beside {}: process memory and restarts are not watched",
            args.topology.display()
        );
    }
    let replicas = |group: &parsec_core::config::RaftGroup| -> Vec<String> {
        group.replicas.iter().map(|r| r.address.clone()).collect()
    };
    let targets = parsec_bench::soak::Targets {
        rpc: config
            .agents
            .iter()
            .filter_map(|a| a.rpc_address.clone())
            .collect(),
        agents: config.agents.iter().map(|a| a.address.clone()).collect(),
        shards: config
            .shards
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| r.address.clone()))
            .collect(),
        ticketers: replicas(&config.ticket_machine),
        tls,
    };
    let options = parsec_bench::SoakOptions {
        targets,
        processes,
        duration: Duration::from_secs_f64(args.duration),
        valid_concurrency: args.concurrency,
        hostile_concurrency: args.hostile_concurrency,
        accounts: args.accounts,
        progress: !args.json,
    };
    let report = runtime()?
        .block_on(parsec_bench::run_soak(options))
        .map_err(|e| e.to_string())?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", report.summary());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}
