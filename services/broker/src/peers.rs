//! The shards' view of each other for recovery, over the broker's transports (gRPC between
//! processes, in process in `parsec dev`).

use crate::transport::ShardTransport;
use async_trait::async_trait;
use parsec_core::{ShardId, Ticket};
use parsec_proto as pb;
use parsec_shard::engine::TicketState;
use parsec_shard::recovery::Peers;
use std::sync::Arc;
use std::time::Duration;

pub struct ShardPeers {
    shards: Vec<Arc<dyn ShardTransport>>,
    timeout: Duration,
}

impl ShardPeers {
    /// `shards[i]` must reach shard `i`.
    pub fn new(shards: Vec<Arc<dyn ShardTransport>>, timeout: Duration) -> Self {
        Self { shards, timeout }
    }

    fn shard(&self, shard: ShardId) -> Result<&Arc<dyn ShardTransport>, String> {
        self.shards
            .get(shard.0 as usize)
            .ok_or_else(|| format!("no {shard} in the topology"))
    }
}

async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, crate::transport::TransportError>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())
}

#[async_trait]
impl Peers for ShardPeers {
    async fn ticket_state(
        &self,
        shard: ShardId,
        ticket: Ticket,
    ) -> Result<Option<(TicketState, u32)>, String> {
        let request = pb::GetTicketsRequest {
            agent: None,
            ticket: Some(ticket.0),
        };
        let reply = within(self.timeout, self.shard(shard)?.get_tickets(request)).await?;
        let Some(info) = reply.tickets.into_iter().find(|t| t.ticket == ticket.0) else {
            return Ok(None);
        };
        let state = match pb::TicketState::try_from(info.state) {
            Ok(pb::TicketState::Begun) => TicketState::Begun,
            Ok(pb::TicketState::Wounded) => TicketState::Wounded,
            Ok(pb::TicketState::Preparing) => TicketState::Preparing,
            Ok(pb::TicketState::Prepared) => TicketState::Prepared,
            Ok(pb::TicketState::Committed) => TicketState::Committed,
            _ => {
                return Err(format!(
                    "{shard} reported an unknown ticket state {}",
                    info.state
                ));
            }
        };
        Ok(Some((state, info.attempt)))
    }

    async fn fence(&self, shard: ShardId, ticket: Ticket, attempt: u32) -> Result<(), String> {
        let request = pb::TicketRequest {
            ticket: ticket.0,
            attempt,
            fence: true,
        };
        let reply = within(self.timeout, self.shard(shard)?.rollback(request)).await?;
        match reply.error {
            None => Ok(()),
            Some(error) => Err(error.message),
        }
    }
}
