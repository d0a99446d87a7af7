//! What can go wrong in a transaction, and what the agent should do about it.

use parsec_core::{ShardId, Ticket};
use parsec_proto as pb;
use parsec_ticketer::TicketError;
use std::time::Duration;

#[derive(Clone, Debug, thiserror::Error)]
pub enum BrokerError {
    /// An older transaction took a lock this one held or waited for.
    #[error("wounded by {by:?} on {shard}")]
    Wounded { shard: ShardId, by: Option<Ticket> },
    /// The shard refused the request (stale attempt, lock wait timeout, …).
    #[error("{shard} refused: {message}")]
    Refused {
        shard: ShardId,
        code: pb::ErrorCode,
        message: String,
    },
    #[error("{shard} did not answer within {deadline:?}")]
    Timeout { shard: ShardId, deadline: Duration },
    #[error("{shard} unreachable: {message}")]
    Unreachable { shard: ShardId, message: String },
    #[error("{shard} broke the protocol: {message}")]
    Protocol { shard: ShardId, message: String },
    /// The write-set names a key this transaction never write-locked.
    #[error("the write-set writes key {key} without holding its write lock")]
    CommitHazard { key: String },
    /// A one-phase commit got no answer: it may or may not have been applied.
    #[error("commit outcome unknown: {0}")]
    OutcomeUnknown(String),
    #[error(transparent)]
    Ticket(#[from] TicketError),
}

impl BrokerError {
    /// Whether running the transaction again (same ticket, next attempt) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            BrokerError::Wounded { .. }
            | BrokerError::Timeout { .. }
            | BrokerError::Unreachable { .. } => true,
            BrokerError::Refused { code, .. } => matches!(
                code,
                pb::ErrorCode::LockTimeout
                    | pb::ErrorCode::StaleAttempt
                    | pb::ErrorCode::UnknownTicket
                    | pb::ErrorCode::LockNotHeld
                    | pb::ErrorCode::Overloaded
                    | pb::ErrorCode::Fenced
                    // Reaches the caller only from a two-phase vote whose attempt was then
                    // fenced everywhere (otherwise it becomes `OutcomeUnknown`).
                    | pb::ErrorCode::OutcomeUnknown
            ),
            BrokerError::Protocol { .. }
            | BrokerError::CommitHazard { .. }
            | BrokerError::OutcomeUnknown(_)
            | BrokerError::Ticket(_) => false,
        }
    }

    /// Whether the request may or may not have taken effect on the shard (no answer, or the
    /// shard could not tell whether its log took the write).
    pub fn is_uncertain(&self) -> bool {
        match self {
            BrokerError::Timeout { .. } | BrokerError::Unreachable { .. } => true,
            BrokerError::Refused { code, .. } => *code == pb::ErrorCode::OutcomeUnknown,
            _ => false,
        }
    }

    pub fn is_wound(&self) -> bool {
        matches!(self, BrokerError::Wounded { .. })
    }

    /// Converts a shard's protocol error.
    pub(crate) fn from_shard(shard: ShardId, error: pb::ShardError) -> Self {
        let code = pb::ErrorCode::try_from(error.code).unwrap_or(pb::ErrorCode::Unspecified);
        if code == pb::ErrorCode::Wounded {
            return BrokerError::Wounded {
                shard,
                by: error.wounded_by.map(Ticket),
            };
        }
        BrokerError::Refused {
            shard,
            code,
            message: error.message,
        }
    }
}
