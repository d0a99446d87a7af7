//! The broker: an agent's client of the shards and the ticket machine.
//!
//! It places keys on shards with the directory, sends all the lock requests of one step to a
//! shard in one RPC (shards in parallel), and commits with the cheapest protocol that is still
//! atomic: one-phase on a single shard, read-only votes that skip the replicated log, and two-phase
//! commit across shards answered at the commit point (every participant prepared) with the second
//! phase finished in the background. Every RPC has a deadline.

pub mod error;
pub mod metrics;
pub mod peers;
pub mod transaction;
pub mod transport;

pub use error::BrokerError;
pub use peers::ShardPeers;
pub use transaction::{CommitOutcome, Transaction, Visible};
pub use transport::{GrpcShard, LocalShard, ShardTransport};

use parsec_core::{AgentId, Directory, Key, Settings, ShardId, Ticket, Value};
use parsec_proto as pb;
use parsec_ticketer::TicketDispenser;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Deadlines and backoff of the broker.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    pub rpc_timeout: Duration,
    pub lock_wait: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl From<&Settings> for BrokerSettings {
    fn from(s: &Settings) -> Self {
        Self {
            rpc_timeout: Duration::from_millis(s.rpc_timeout_ms),
            lock_wait: Duration::from_millis(s.lock_wait_timeout_ms),
            backoff_min: Duration::from_millis(s.retry_backoff_min_ms),
            backoff_max: Duration::from_millis(s.retry_backoff_max_ms),
        }
    }
}

/// One agent's broker. Shared by all of that agent's transactions.
pub struct Broker {
    agent: AgentId,
    directory: Directory,
    shards: Vec<Arc<dyn ShardTransport>>,
    tickets: Arc<TicketDispenser>,
    settings: BrokerSettings,
}

impl Broker {
    /// `shards[i]` must reach shard `i`.
    pub fn new(
        agent: AgentId,
        shards: Vec<Arc<dyn ShardTransport>>,
        tickets: Arc<TicketDispenser>,
        settings: BrokerSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            agent,
            directory: Directory::new(shards.len() as u32),
            shards,
            tickets,
            settings,
        })
    }

    pub fn agent(&self) -> AgentId {
        self.agent
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    pub fn directory(&self) -> Directory {
        self.directory
    }

    /// A fresh ticket for a new transaction.
    pub async fn ticket(&self) -> Result<Ticket, BrokerError> {
        Ok(self.tickets.next().await?)
    }

    /// Starts attempt `attempt` of the transaction with `ticket`.
    pub fn begin(self: &Arc<Self>, ticket: Ticket, attempt: u32) -> Transaction {
        Transaction::new(Arc::clone(self), ticket, attempt)
    }

    /// How long to wait before attempt `attempt` (≥ 1) of a wounded transaction: exponential
    /// with full jitter, so that transactions that collided once do not collide again in step.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let min = self.settings.backoff_min.as_micros() as u64;
        let max = self.settings.backoff_max.as_micros() as u64;
        let ceiling = min
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .clamp(min, max.max(min));
        Duration::from_micros(rand::rng().random_range(0..=ceiling))
    }

    /// Committed values of `keys`, without a ticket or locks; shards are asked in parallel.
    pub async fn read(&self, keys: &[Key]) -> Result<Vec<Value>, BrokerError> {
        let mut by_shard: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
        for (index, key) in keys.iter().enumerate() {
            by_shard
                .entry(self.directory.shard_of(key))
                .or_default()
                .push(index);
        }
        let calls = by_shard.into_iter().map(|(shard, indexes)| {
            let request = pb::ReadRequest {
                keys: indexes.iter().map(|&i| keys[i].clone()).collect(),
            };
            async move {
                let reply = self
                    .call(shard, self.settings.rpc_timeout, |t| {
                        Box::pin(async move { t.read(request).await })
                    })
                    .await?;
                if reply.values.len() != indexes.len() {
                    return Err(BrokerError::Protocol {
                        shard,
                        message: "read reply has the wrong number of values".into(),
                    });
                }
                Ok::<_, BrokerError>((indexes, reply.values))
            }
        });
        let mut values = vec![Value::new(); keys.len()];
        for (indexes, reply) in futures::future::try_join_all(calls).await? {
            for (index, value) in indexes.into_iter().zip(reply) {
                values[index] = value;
            }
        }
        Ok(values)
    }

    /// Renews this agent's lease on every shard once; returns how many shards answered.
    pub async fn heartbeat(&self, incarnation: u64, lease: Duration) -> usize {
        let calls = (0..self.shards.len() as u32).map(|i| {
            let request = pb::HeartbeatRequest {
                agent: self.agent.0,
                incarnation,
                lease_ms: lease.as_millis() as u64,
            };
            self.call(ShardId(i), self.settings.rpc_timeout.min(lease), move |t| {
                Box::pin(async move { t.heartbeat(request).await })
            })
        });
        let outcomes = futures::future::join_all(calls).await;
        outcomes.iter().filter(|outcome| outcome.is_ok()).count()
    }

    /// Renews this agent's lease every third of it, for as long as the broker lives.
    pub fn spawn_heartbeats(
        self: &Arc<Self>,
        incarnation: u64,
        lease: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let broker = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(lease / 3);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(broker) = broker.upgrade() else {
                    return;
                };
                let answered = broker.heartbeat(incarnation, lease).await;
                if answered < broker.shards.len() {
                    tracing::warn!(
                        answered,
                        shards = broker.shards.len(),
                        "lease renewal missed shards"
                    );
                }
            }
        })
    }

    /// Status of every shard, in shard order.
    pub async fn shard_status(&self) -> Result<Vec<pb::ShardStatus>, BrokerError> {
        let calls = (0..self.shards.len() as u32).map(|i| {
            self.call(ShardId(i), self.settings.rpc_timeout, |t| {
                Box::pin(async move { t.status().await })
            })
        });
        futures::future::try_join_all(calls).await
    }

    /// Runs one RPC against `shard` with a deadline.
    pub(crate) async fn call<'a, T>(
        &'a self,
        shard: ShardId,
        deadline: Duration,
        rpc: impl FnOnce(
            &'a dyn ShardTransport,
        )
            -> futures::future::BoxFuture<'a, Result<T, transport::TransportError>>,
    ) -> Result<T, BrokerError> {
        let transport = self
            .shards
            .get(shard.0 as usize)
            .ok_or_else(|| BrokerError::Protocol {
                shard,
                message: "no such shard".into(),
            })?;
        match tokio::time::timeout(deadline, rpc(transport.as_ref())).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(BrokerError::Unreachable {
                shard,
                message: error.to_string(),
            }),
            Err(_) => Err(BrokerError::Timeout { shard, deadline }),
        }
    }
}
