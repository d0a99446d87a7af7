//! Recovery of a dead agent's tickets, driven by the shards themselves.
//!
//! When an agent's lease lapses, each shard rolls back the agent's unprepared tickets (their
//! locks are released at once) and resolves its prepared ones by asking the other participants
//! (named in the prepare record):
//!
//! - some participant committed the ticket → commit: a participant commits only after the
//!   decision, and the decision is final;
//! - every participant is prepared (same attempt) → commit: that is the commit point, and the
//!   agent may already have told its client "committed";
//! - a participant is still replicating its prepare → wait and ask again;
//! - otherwise → fence the participants that are not prepared (a replicated abort that also
//!   refuses any later prepare of that attempt, so a late prepare from the agent fails) and
//!   abort. No participant can have committed: commit needs every participant prepared, and one
//!   is not, and now never will be.
//!
//! Fences and aborts go through each shard's Raft log, so they hold across failovers, and a
//! shard that answers "no record" but no longer leads cannot fence (its write fails): recovery
//! then retries on the next sweep.
//!
//! The decision is a pure function of the participants' states ([`decide`]), so several shards
//! resolving the same ticket at once, or the agent itself coming back, reach the same outcome.
//! A committed record is finished (forgotten) once no participant is still prepared.

use crate::engine::{Orphan, ShardEngine, TicketState};
use async_trait::async_trait;
use parsec_core::{ShardId, Ticket};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What a shard needs from the other shards to resolve a ticket.
#[async_trait]
pub trait Peers: Send + Sync + 'static {
    /// `shard`'s state of `ticket` and the attempt it knows, `None` when it has no record.
    async fn ticket_state(
        &self,
        shard: ShardId,
        ticket: Ticket,
    ) -> Result<Option<(TicketState, u32)>, String>;
    /// Rolls `ticket` back on `shard`, so that a late prepare of it fails there.
    async fn fence(&self, shard: ShardId, ticket: Ticket, attempt: u32) -> Result<(), String>;
}

/// What to do with an orphaned ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    Commit,
    /// Abort after fencing these participants.
    Abort {
        fence: Vec<ShardId>,
    },
    /// Committed here and no participant is still prepared: forget it.
    Finish,
    /// Committed here and others still prepared (they will commit by themselves), or a
    /// participant's prepare is still being replicated: ask again later.
    Wait,
}

/// Decides an orphan's fate from the other participants' states (`None`: no record there).
pub fn decide(orphan: &Orphan, others: &[(ShardId, Option<(TicketState, u32)>)]) -> Resolution {
    let same_attempt = |state: &Option<(TicketState, u32)>, wanted: TicketState| matches!(state, Some((s, a)) if *s == wanted && *a == orphan.attempt);
    if others
        .iter()
        .any(|(_, state)| same_attempt(state, TicketState::Preparing))
    {
        return Resolution::Wait;
    }
    if orphan.committed {
        return if others
            .iter()
            .any(|(_, state)| same_attempt(state, TicketState::Prepared))
        {
            Resolution::Wait
        } else {
            Resolution::Finish
        };
    }
    if others
        .iter()
        .any(|(_, state)| same_attempt(state, TicketState::Committed))
        || others
            .iter()
            .all(|(_, state)| same_attempt(state, TicketState::Prepared))
    {
        return Resolution::Commit;
    }
    Resolution::Abort {
        fence: others
            .iter()
            .filter(|(_, state)| !same_attempt(state, TicketState::Prepared))
            .map(|(shard, _)| *shard)
            .collect(),
    }
}

/// Resolves one orphan; returns whether it is settled on this shard.
pub async fn resolve(engine: &ShardEngine, peers: &dyn Peers, orphan: &Orphan) -> bool {
    let mut others = Vec::new();
    for &shard in orphan.participants.iter().filter(|&&s| s != engine.id()) {
        match peers.ticket_state(shard, orphan.ticket).await {
            Ok(state) => others.push((shard, state)),
            Err(error) => {
                tracing::warn!(ticket = %orphan.ticket, %shard, %error, "cannot ask participant; retrying later");
                return false;
            }
        }
    }
    let resolution = decide(orphan, &others);
    tracing::info!(ticket = %orphan.ticket, agent = %orphan.agent, ?resolution, "resolving orphaned ticket");
    let label = match &resolution {
        Resolution::Commit => "commit",
        Resolution::Finish => "finish",
        Resolution::Abort { .. } => "abort",
        Resolution::Wait => "wait",
    };
    let outcome = match resolution {
        Resolution::Commit => engine.commit(orphan.ticket).await,
        Resolution::Finish => engine.finish(orphan.ticket).await,
        Resolution::Wait => return false,
        Resolution::Abort { fence } => {
            for shard in fence {
                if let Err(error) = peers.fence(shard, orphan.ticket, orphan.attempt).await {
                    tracing::warn!(ticket = %orphan.ticket, %shard, %error, "cannot fence participant; retrying later");
                    return false;
                }
            }
            engine.rollback(orphan.ticket, orphan.attempt, true).await
        }
    };
    match outcome {
        Ok(()) => {
            engine.metrics().recovered(label);
            true
        }
        Err(error) => {
            tracing::warn!(ticket = %orphan.ticket, %error, "recovery step failed; retrying later");
            false
        }
    }
}

/// Runs lease expiry and recovery every `interval` until the engine is dropped by everyone else.
pub fn spawn_recovery(
    engine: ShardEngine,
    peers: Arc<dyn Peers>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: HashMap<Ticket, Orphan> = HashMap::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Sizes are gauges on every replica (followers have the state too).
            engine.refresh_metrics();
            if !engine.is_leading() {
                // The next leader sweeps from what the log holds.
                pending.clear();
                continue;
            }
            for orphan in engine.sweep_expired() {
                pending.insert(orphan.ticket, orphan);
            }
            let mut settled = Vec::new();
            for orphan in pending.values() {
                if resolve(&engine, peers.as_ref(), orphan).await {
                    settled.push(orphan.ticket);
                }
            }
            for ticket in settled {
                pending.remove(&ticket);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TicketState::*;
    use parsec_core::AgentId;

    fn orphan(committed: bool) -> Orphan {
        Orphan {
            ticket: Ticket(7),
            attempt: 2,
            agent: AgentId(1),
            participants: vec![ShardId(0), ShardId(1), ShardId(2)],
            committed,
        }
    }

    fn others(
        states: [Option<(TicketState, u32)>; 2],
    ) -> Vec<(ShardId, Option<(TicketState, u32)>)> {
        vec![(ShardId(1), states[0]), (ShardId(2), states[1])]
    }

    #[test]
    fn all_prepared_commits() {
        let decision = decide(
            &orphan(false),
            &others([Some((Prepared, 2)), Some((Prepared, 2))]),
        );
        assert_eq!(decision, Resolution::Commit);
    }

    #[test]
    fn one_committed_commits() {
        let decision = decide(&orphan(false), &others([Some((Committed, 2)), None]));
        assert_eq!(decision, Resolution::Commit);
    }

    #[test]
    fn one_not_prepared_fences_and_aborts() {
        let decision = decide(
            &orphan(false),
            &others([Some((Prepared, 2)), Some((Begun, 2))]),
        );
        assert_eq!(
            decision,
            Resolution::Abort {
                fence: vec![ShardId(2)]
            }
        );
        let decision = decide(&orphan(false), &others([None, Some((Wounded, 2))]));
        assert_eq!(
            decision,
            Resolution::Abort {
                fence: vec![ShardId(1), ShardId(2)]
            }
        );
    }

    #[test]
    fn a_prepare_being_replicated_is_waited_for() {
        let decision = decide(
            &orphan(false),
            &others([Some((Preparing, 2)), Some((Begun, 2))]),
        );
        assert_eq!(decision, Resolution::Wait);
    }

    #[test]
    fn another_attempt_does_not_count_as_prepared() {
        let decision = decide(
            &orphan(false),
            &others([Some((Prepared, 2)), Some((Prepared, 3))]),
        );
        assert_eq!(
            decision,
            Resolution::Abort {
                fence: vec![ShardId(2)]
            }
        );
    }

    #[test]
    fn committed_finishes_once_nobody_is_prepared() {
        assert_eq!(
            decide(&orphan(true), &others([Some((Prepared, 2)), None])),
            Resolution::Wait
        );
        assert_eq!(
            decide(&orphan(true), &others([Some((Committed, 2)), None])),
            Resolution::Finish
        );
    }
}
