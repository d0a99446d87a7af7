//! The soak: valid load (ERC-20 transfers over JSON-RPC and Lua payments over gRPC, each
//! audited at the end) and hostile traffic against every port of a running cluster at once,
//! while the resident memory of every process is sampled. It passes when every process is the
//! same process at the end, both audits hold and no hostile request got an unexpected answer.

pub mod hostile;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::erc20::{Erc20Options, run_erc20};
use crate::lua_pay::{LuaPayOptions, run_lua_pay};
use crate::report::Report;
use crate::{AgentPool, run};
pub use hostile::{Attack, AttackTally, Targets};
pub use memory::{MemoryTrack, Watched};

/// What to soak and how hard.
pub struct SoakOptions {
    pub targets: Targets,
    /// The cluster's processes, watched for memory and restarts.
    pub processes: Vec<Watched>,
    pub duration: Duration,
    /// Transfers and payments in flight (each workload).
    pub valid_concurrency: usize,
    /// Hostile requests in flight.
    pub hostile_concurrency: usize,
    /// Accounts (ERC-20) and wallets (Lua) of the valid load.
    pub accounts: usize,
    pub progress: bool,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub duration_s: f64,
    pub erc20: Report,
    pub lua: Report,
    pub hostile: Vec<AttackTally>,
    pub processes: Vec<MemoryTrack>,
}

impl SoakReport {
    pub fn survived(&self) -> bool {
        self.processes.iter().all(|p| p.survived)
    }

    pub fn conserved(&self) -> bool {
        [&self.erc20, &self.lua]
            .iter()
            .all(|r| r.total_ok && r.wallets_ok != Some(false))
    }

    pub fn unexpected(&self) -> u64 {
        self.hostile.iter().map(|t| t.unexpected).sum()
    }

    pub fn passed(&self) -> bool {
        self.survived() && self.conserved() && self.unexpected() == 0
    }

    /// A human-readable account of the run.
    pub fn summary(&self) -> String {
        let mut out = format!("soak: {:.0} s\n", self.duration_s);
        out += &format!(
            "valid load:\n  {}\n  {}\n",
            self.erc20.summary(),
            self.lua.summary()
        );
        out += "hostile traffic (attack, sent, refused, answered, unexpected):\n";
        for tally in &self.hostile {
            let name = tally
                .attack
                .map(|a| serde_json::to_value(a).unwrap_or_default())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            out += &format!(
                "  {name:<28} {:>8} {:>8} {:>8} {:>6}\n",
                tally.sent, tally.refused, tally.answered, tally.unexpected
            );
            for example in &tally.examples {
                out += &format!("      e.g. {example}\n");
            }
        }
        out += "memory (process, RSS after warm-up, max, end, growth; MiB):\n";
        let mib =
            |kib: Option<u64>| kib.map_or("-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        for process in &self.processes {
            out += &format!(
                "  {:<14} {:>8} {:>8} {:>8} {:>8}{}\n",
                process.name,
                mib(process.warm_kib),
                mib(Some(process.max_kib)),
                mib(process.end_kib),
                process
                    .growth_kib()
                    .map_or("-".to_owned(), |g| format!("{:+.1}", g as f64 / 1024.0)),
                if process.survived {
                    ""
                } else {
                    "  DIED OR RESTARTED"
                },
            );
        }
        out += &format!(
            "result: {} (processes {}, conservation {}, unexpected answers {})\n",
            if self.passed() { "PASSED" } else { "FAILED" },
            if self.survived() {
                "all survived"
            } else {
                "NOT all survived"
            },
            if self.conserved() { "holds" } else { "BROKEN" },
            self.unexpected()
        );
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("soak options: {0}")]
    Options(String),
    #[error("{workload} could not run: {message}")]
    Workload {
        workload: &'static str,
        message: String,
    },
}

/// Runs the soak; returns once the valid load (and so the hostile traffic) is over.
pub async fn run_soak(options: SoakOptions) -> Result<SoakReport, SoakError> {
    if options.targets.rpc.is_empty() || options.targets.agents.is_empty() {
        return Err(SoakError::Options(
            "the soak needs agents serving both JSON-RPC and gRPC".into(),
        ));
    }
    let attacker = hostile::Attacker::new(options.targets.clone())
        .await
        .map(Arc::new)
        .map_err(SoakError::Options)?;
    let tally = Arc::new(hostile::Tally::default());
    let (stop, stopped) = watch::channel(false);
    let attackers: Vec<_> = (0..options.hostile_concurrency.max(1))
        .map(|worker| {
            tokio::spawn(attack_until_stopped(
                Arc::clone(&attacker),
                Arc::clone(&tally),
                stopped.clone(),
                worker,
            ))
        })
        .collect();
    let progress = options.progress.then(|| {
        let bar = run::progress_bar(options.duration, true);
        let tally = Arc::clone(&tally);
        let shown = bar.clone();
        let limit = options.duration.as_secs();
        let ticker = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                shown.set_position(started.elapsed().as_secs().min(limit));
                shown.set_message(format!(
                    "hostile: {} sent, {} unexpected",
                    tally.sent(),
                    tally.unexpected()
                ));
            }
        });
        (bar, ticker)
    });

    let started = std::time::Instant::now();
    let erc20 = run_erc20(
        options.targets.rpc.clone(),
        Erc20Options {
            accounts: options.accounts,
            concurrency: options.valid_concurrency,
            duration: options.duration,
            max_transfers: None,
            progress: false,
            deployer_key: None,
            presign: false,
            hot_fraction: 0.0,
            server_pids: Vec::new(),
        },
    );
    let lua = async {
        let pool = AgentPool::connect(&options.targets.agents, options.targets.tls.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        run_lua_pay(
            pool,
            LuaPayOptions {
                wallets: options.accounts,
                concurrency: options.valid_concurrency,
                duration: options.duration,
                progress: false,
                ..LuaPayOptions::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
    };
    let every = (options.duration / 120).max(Duration::from_secs(1));
    let warm = (options.duration / 10).min(Duration::from_secs(120));
    let ((erc20, lua), processes) = memory::watch(
        &options.processes,
        every,
        warm,
        futures::future::join(erc20, lua),
    )
    .await;
    let _ = stop.send(true);
    for attacker in attackers {
        let _ = attacker.await;
    }
    if let Some((bar, ticker)) = progress {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok(SoakReport {
        duration_s: started.elapsed().as_secs_f64(),
        erc20: erc20.map_err(|e| SoakError::Workload {
            workload: "ERC-20 transfers",
            message: e.to_string(),
        })?,
        lua: lua.map_err(|message| SoakError::Workload {
            workload: "Lua payments",
            message,
        })?,
        hostile: tally.snapshot(),
        processes,
    })
}

/// One attacking task: every kind of attack in turn (starting at its own), until stopped.
async fn attack_until_stopped(
    attacker: Arc<hostile::Attacker>,
    tally: Arc<hostile::Tally>,
    stopped: watch::Receiver<bool>,
    worker: usize,
) {
    let kinds = Attack::ALL;
    let mut next = worker % kinds.len();
    while !*stopped.borrow() {
        let attack = kinds[next];
        next = (next + 1) % kinds.len();
        if let Some(outcome) = attacker.attempt(attack).await {
            tally.record(attack, outcome);
        }
    }
}
