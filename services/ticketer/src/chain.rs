//! The block clock: logical blocks for the Ethereum view of the system (DESIGN.md §4).
//!
//! Time is cut into windows of `interval_ms` from a genesis instant replicated once: block `n ≥ 1`
//! is the window `[genesis + (n-1)·interval, genesis + n·interval)`. Agents stamp each transaction
//! they commit with the block open on their clock (never one already sealed or promised), keep the
//! list of what they committed in each block (their *part* of it) and store each part in the
//! shards once the block is closed for them. They report to the ticket machine, which is also
//! their lease here: "I will stamp nothing at or below `through`, and these blocks hold a part of
//! mine."
//!
//! The leader seals block `n` — a replicated write, so a sealed block is never unsealed or
//! changed — once its window is over and every agent whose lease is live has reported a
//! `through ≥ n`. An agent whose lease ran out no longer holds sealing back; what it committed and
//! never reported is in no block (its client never got an answer either). A new leader first
//! waits one lease, so that every live agent has reported to it before it seals anything.
//!
//! Only which agents contributed to which block is replicated here (a few bytes per block); the
//! transactions themselves live in the shards, under keys the agents write.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Which agents hold a part of which sealed block: the replicated half of the block clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockLedger {
    /// Unix milliseconds at which block 1 opened; `None` until the first seal.
    genesis_ms: Option<u64>,
    interval_ms: u64,
    /// Every block up to this one is sealed.
    sealed: u64,
    /// The agents with a part in each non-empty sealed block.
    parts: BTreeMap<u64, Vec<u64>>,
}

/// A replicated seal: blocks `(sealed, through]` are final, with these parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// Used by the first seal only: the clock's origin and window length.
    pub genesis_ms: u64,
    pub interval_ms: u64,
    pub through: u64,
    /// `(block, agent)` for every part in the newly sealed blocks.
    pub parts: Vec<(u64, u64)>,
}

/// The sealed height and which agents hold parts of some sealed blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SealedParts {
    pub sealed: u64,
    /// `(block, agents)` for the non-empty blocks asked for, in order.
    pub blocks: Vec<(u64, Vec<u64>)>,
}

/// What agents need to run the clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockView {
    pub genesis_ms: u64,
    pub interval_ms: u64,
    pub sealed: u64,
}

impl ClockView {
    /// The block whose window holds `now_ms` (0 before genesis).
    pub fn block_at(&self, now_ms: u64) -> u64 {
        block_at(self.genesis_ms, self.interval_ms, now_ms)
    }

    /// Unix seconds of block `number`: the end of its window (what TIMESTAMP reads).
    pub fn timestamp(&self, number: u64) -> u64 {
        self.genesis_ms
            .saturating_add(number.saturating_mul(self.interval_ms))
            / 1000
    }

    pub fn is_running(&self) -> bool {
        self.interval_ms > 0
    }
}

/// The block whose window holds `now_ms`.
pub fn block_at(genesis_ms: u64, interval_ms: u64, now_ms: u64) -> u64 {
    if interval_ms == 0 || now_ms < genesis_ms {
        return 0;
    }
    (now_ms - genesis_ms) / interval_ms + 1
}

impl BlockLedger {
    pub fn view(&self) -> ClockView {
        ClockView {
            genesis_ms: self.genesis_ms.unwrap_or_default(),
            interval_ms: self.interval_ms,
            sealed: self.sealed,
        }
    }

    pub fn is_started(&self) -> bool {
        self.genesis_ms.is_some()
    }

    pub fn sealed(&self) -> u64 {
        self.sealed
    }

    /// Applies a seal; a seal at or below the sealed height changes nothing (a replay, or a
    /// stale leader's). Returns the sealed height.
    pub fn apply(&mut self, seal: &Seal) -> u64 {
        if self.genesis_ms.is_none() {
            self.genesis_ms = Some(seal.genesis_ms);
            self.interval_ms = seal.interval_ms.max(1);
        }
        if seal.through > self.sealed {
            for &(block, agent) in &seal.parts {
                if block > self.sealed && block <= seal.through {
                    let agents = self.parts.entry(block).or_default();
                    if !agents.contains(&agent) {
                        agents.push(agent);
                        agents.sort_unstable();
                    }
                }
            }
            self.sealed = seal.through;
        }
        self.sealed
    }

    /// The parts of sealed blocks in `[from, to]` (non-empty blocks only).
    pub fn parts(&self, from: u64, to: u64) -> Vec<(u64, Vec<u64>)> {
        if from > to {
            return Vec::new();
        }
        self.parts
            .range(from..=to.min(self.sealed))
            .map(|(block, agents)| (*block, agents.clone()))
            .collect()
    }
}

/// One agent's report, as the leader keeps it.
#[derive(Clone, Debug)]
struct AgentReport {
    through: u64,
    parts: BTreeSet<u64>,
    seen: Instant,
}

/// The leader's soft state: the latest report of each agent (lost on failover, which is why a
/// new leader waits a lease before sealing).
#[derive(Debug)]
pub struct Sealer {
    lease: Duration,
    agents: HashMap<u64, AgentReport>,
    leading_since: Option<Instant>,
}

impl Sealer {
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            agents: HashMap::new(),
            leading_since: None,
        }
    }

    /// Records that this replica leads (or not) as of `now`.
    pub fn set_leading(&mut self, leading: bool, now: Instant) {
        match (leading, self.leading_since) {
            (true, None) => self.leading_since = Some(now),
            (false, _) => {
                self.leading_since = None;
                self.agents.clear();
            }
            (true, Some(_)) => {}
        }
    }

    /// Records an agent's report.
    pub fn report(&mut self, agent: u64, through: u64, parts: &[u64], now: Instant) {
        let entry = self.agents.entry(agent).or_insert_with(|| AgentReport {
            through,
            parts: BTreeSet::new(),
            seen: now,
        });
        // Reports may overtake one another; `through` only grows.
        entry.through = entry.through.max(through);
        entry.parts.extend(parts.iter().copied());
        entry.seen = now;
    }

    /// The seal to write now, if any: blocks whose window is over at `now_ms` and that every
    /// agent with a live lease has passed. `fresh` says the ledger has never sealed (then no
    /// agent can have stamped anything yet and there is nothing to wait for).
    pub fn plan(
        &mut self,
        ledger: &BlockLedger,
        interval_ms: u64,
        now_ms: u64,
        now: Instant,
    ) -> Option<Seal> {
        let leading_since = self.leading_since?;
        let lease = self.lease;
        self.agents
            .retain(|_, report| now.saturating_duration_since(report.seen) < lease);
        if !ledger.is_started() {
            return Some(Seal {
                genesis_ms: now_ms,
                interval_ms,
                through: 0,
                parts: Vec::new(),
            });
        }
        if now.saturating_duration_since(leading_since) < lease {
            return None;
        }
        let view = ledger.view();
        let closed = view.block_at(now_ms).saturating_sub(1);
        let through = self
            .agents
            .values()
            .map(|report| report.through)
            .fold(closed, u64::min);
        if through <= view.sealed {
            return None;
        }
        let mut parts = Vec::new();
        for (agent, report) in &self.agents {
            for &block in report.parts.range(view.sealed + 1..=through) {
                parts.push((block, *agent));
            }
        }
        parts.sort_unstable();
        Some(Seal {
            genesis_ms: view.genesis_ms,
            interval_ms: view.interval_ms,
            through,
            parts,
        })
    }

    /// Forgets parts that are sealed now.
    pub fn sealed(&mut self, through: u64) {
        for report in self.agents.values_mut() {
            report.parts = report.parts.split_off(&(through + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn started(genesis_ms: u64) -> BlockLedger {
        let mut ledger = BlockLedger::default();
        ledger.apply(&Seal {
            genesis_ms,
            interval_ms: 100,
            through: 0,
            parts: vec![],
        });
        ledger
    }

    #[test]
    fn windows_map_to_blocks() {
        assert_eq!(block_at(1_000, 100, 999), 0);
        assert_eq!(block_at(1_000, 100, 1_000), 1);
        assert_eq!(block_at(1_000, 100, 1_099), 1);
        assert_eq!(block_at(1_000, 100, 1_100), 2);
        assert_eq!(block_at(1_000, 0, 5_000), 0);
    }

    #[test]
    fn the_first_plan_starts_the_clock_and_a_new_leader_waits_a_lease() {
        let t0 = Instant::now();
        let mut sealer = Sealer::new(LEASE);
        let mut ledger = BlockLedger::default();
        assert!(
            sealer.plan(&ledger, 100, 10_000, t0).is_none(),
            "not leading"
        );
        sealer.set_leading(true, t0);
        let genesis = sealer.plan(&ledger, 100, 10_000, t0).expect("genesis");
        assert_eq!((genesis.genesis_ms, genesis.through), (10_000, 0));
        ledger.apply(&genesis);
        // A started ledger under a leader that has led for less than a lease: nothing.
        assert!(sealer.plan(&ledger, 100, 20_000, t0).is_none());
        let later = t0 + LEASE;
        let seal = sealer.plan(&ledger, 100, 20_000, later).expect("seal");
        // No agents: every closed window seals (block 101 is still open at 20 000 ms).
        assert_eq!(seal.through, 100);
    }

    #[test]
    fn sealing_waits_for_every_live_agent_and_collects_their_parts() {
        let t0 = Instant::now();
        let mut ledger = started(0);
        let mut sealer = Sealer::new(LEASE);
        sealer.set_leading(true, t0);
        let now = t0 + LEASE;
        sealer.report(1, 7, &[3, 5], now);
        sealer.report(2, 4, &[4], now);
        let seal = sealer.plan(&ledger, 100, 1_000, now).expect("seal");
        assert_eq!(seal.through, 4, "agent 2 holds block 5 back");
        assert_eq!(seal.parts, vec![(3, 1), (4, 2)]);
        assert_eq!(ledger.apply(&seal), 4);
        sealer.sealed(4);
        // Agent 2 dies: once its lease is over, it no longer holds sealing back.
        sealer.report(1, 9, &[], now + LEASE);
        let seal = sealer.plan(&ledger, 100, 2_000, now + LEASE).expect("seal");
        assert_eq!(seal.through, 9);
        assert_eq!(seal.parts, vec![(5, 1)]);
        ledger.apply(&seal);
        assert_eq!(
            ledger.parts(0, 100),
            vec![(3, vec![1]), (4, vec![2]), (5, vec![1])]
        );
    }

    #[test]
    fn a_sealed_block_never_changes() {
        let mut ledger = started(0);
        let first = Seal {
            genesis_ms: 0,
            interval_ms: 100,
            through: 5,
            parts: vec![(2, 1)],
        };
        ledger.apply(&first);
        // A stale or replayed seal (a deposed leader's) adds nothing to sealed blocks.
        let stale = Seal {
            genesis_ms: 99,
            interval_ms: 7,
            through: 4,
            parts: vec![(2, 9), (3, 9)],
        };
        assert_eq!(ledger.apply(&stale), 5);
        assert_eq!(ledger.parts(0, 10), vec![(2, vec![1])]);
        assert_eq!(ledger.view().genesis_ms, 0, "genesis is set once");
        // A later seal only adds parts above the old height.
        ledger.apply(&Seal {
            genesis_ms: 0,
            interval_ms: 100,
            through: 8,
            parts: vec![(2, 9), (6, 9)],
        });
        assert_eq!(ledger.parts(0, 10), vec![(2, vec![1]), (6, vec![9])]);
    }

    #[test]
    fn an_agent_report_never_moves_back() {
        let t0 = Instant::now();
        let ledger = started(0);
        let mut sealer = Sealer::new(LEASE);
        sealer.set_leading(true, t0);
        let now = t0 + LEASE;
        sealer.report(1, 8, &[], now);
        sealer.report(1, 6, &[], now);
        assert_eq!(
            sealer.plan(&ledger, 100, 10_000, now).map(|s| s.through),
            Some(8)
        );
        // Losing leadership forgets every report: the next term waits a lease again.
        sealer.set_leading(false, now);
        sealer.set_leading(true, now);
        assert!(sealer.plan(&ledger, 100, 10_000, now).is_none());
    }
}
