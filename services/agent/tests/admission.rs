//! An agent takes at most `max_in_flight` transactions at once: beyond, a call is refused at
//! once with a clear error (the client retries or goes elsewhere) instead of queueing without
//! bound; a finished transaction frees its place.

use std::sync::Arc;
use std::time::Duration;

use parsec_agent::agent::{Agent, AgentError, AgentSettings};
use parsec_agent::lua::LuaRunner;
use parsec_broker::{Broker, BrokerSettings, LocalShard, ShardTransport};
use parsec_core::{AgentId, ShardId};
use parsec_shard::{ShardEngine, ShardService};
use parsec_ticketer::{TicketDispenser, TicketMachineService};
use tokio::sync::oneshot;

fn agent(max_in_flight: usize) -> Arc<Agent> {
    let shard: Arc<dyn ShardTransport> = Arc::new(LocalShard(ShardService::new(
        ShardEngine::new(ShardId(0)),
        Duration::from_secs(5),
    )));
    let tickets = TicketDispenser::new(
        Arc::new(TicketMachineService::default()),
        64,
        Duration::from_millis(50),
    );
    let settings = BrokerSettings {
        rpc_timeout: Duration::from_secs(5),
        lock_wait: Duration::from_secs(5),
        backoff_min: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
    };
    let broker = Broker::new(AgentId(1), vec![shard], tickets, settings);
    Agent::new(
        broker,
        Arc::new(LuaRunner::new(1_000_000, 8 << 20)),
        AgentSettings {
            transaction_timeout: Duration::from_secs(30),
            max_in_flight,
        },
    )
}

#[tokio::test]
async fn transactions_beyond_the_limit_are_refused_at_once() {
    let agent = agent(2);
    // Two transactions that hold their place until told to finish.
    let mut releases = Vec::new();
    let mut running = Vec::new();
    for _ in 0..2 {
        let (release, released) = oneshot::channel::<()>();
        let (started, has_started) = oneshot::channel::<()>();
        releases.push(release);
        let agent = Arc::clone(&agent);
        running.push(tokio::spawn(async move {
            let released = std::sync::Mutex::new(Some(released));
            let started = std::sync::Mutex::new(Some(started));
            agent
                .transact("test", |_, _| {
                    let released = released.lock().ok().and_then(|mut r| r.take());
                    if let Some(started) = started.lock().ok().and_then(|mut s| s.take()) {
                        let _ = started.send(());
                    }
                    async move {
                        if let Some(released) = released {
                            let _ = released.await;
                        }
                        Ok::<(), parsec_agent::agent::AttemptError>(())
                    }
                })
                .await
        }));
        has_started.await.expect("the transaction started");
    }
    let refused = agent
        .transact("test", |_, _| async {
            Ok::<(), parsec_agent::agent::AttemptError>(())
        })
        .await;
    assert!(
        matches!(refused, Err(AgentError::Overloaded(2))),
        "{refused:?}"
    );
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("2 calls in flight"),
        "the error says why"
    );
    for release in releases {
        let _ = release.send(());
    }
    for run in running {
        run.await
            .expect("task")
            .expect("a held transaction commits");
    }
    agent
        .transact("test", |_, _| async {
            Ok::<(), parsec_agent::agent::AttemptError>(())
        })
        .await
        .expect("a finished transaction frees its place");
}
