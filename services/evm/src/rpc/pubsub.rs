//! `eth_subscribe` over WebSocket (`newHeads`, `logs`) and the block feed that both these and
//! log-filter polling follow: every sealed block once, in order, with gaps (a slow subscriber
//! that lagged behind the broadcast) filled from the chain.

use std::sync::Arc;

use alloy_rpc_types_eth::BlockNumberOrTag;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionMessage};
use serde_json::Value;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::chain::{Block, Chain};
use crate::rpc::convert;
use crate::rpc::error::invalid_params;
use crate::rpc::log_filter::{BlockSelection, LogFilter};

/// What one subscription sends per block.
enum Feed {
    Heads,
    Logs(LogFilter),
}

pub async fn subscribe(
    chain: Arc<dyn Chain>,
    pending: PendingSubscriptionSink,
    kind: &str,
    params: Option<Value>,
) -> SubscriptionResult {
    let params = params.filter(|p| !p.is_null());
    let feed = match (kind, params) {
        ("newHeads", None) => Feed::Heads,
        ("newHeads", Some(_)) => {
            pending
                .reject(invalid_params("newHeads takes no parameters"))
                .await;
            return Ok(());
        }
        ("logs", params) => {
            let filter = match params.map(serde_json::from_value::<LogFilter>).transpose() {
                Ok(filter) => filter.unwrap_or_default(),
                Err(error) => {
                    pending
                        .reject(invalid_params(format!("invalid logs filter: {error}")))
                        .await;
                    return Ok(());
                }
            };
            Feed::Logs(filter)
        }
        (other, _) => {
            pending
                .reject(invalid_params(format!(
                    "unsupported subscription \"{other}\" (newHeads and logs are served)"
                )))
                .await;
            return Ok(());
        }
    };
    // Follow the chain before accepting, so that no block sealed after the reply is missed.
    let mut blocks = BlockFeed::new(Arc::clone(&chain)).await;
    let sink = pending.accept().await?;
    loop {
        let block = tokio::select! {
            _ = sink.closed() => return Ok(()),
            block = blocks.next() => block,
        };
        let Some(block) = block else {
            // The chain stopped sealing or lost a block: end the subscription rather than
            // skip blocks silently.
            return Ok(());
        };
        for item in items(&feed, &block, chain.as_ref()) {
            let message = serde_json::value::to_raw_value(&item)?;
            sink.send(SubscriptionMessage::from(message)).await?;
        }
    }
}

fn items(feed: &Feed, block: &Block, chain: &dyn Chain) -> Vec<Value> {
    let to_json = |value: serde_json::Result<Value>| {
        value
            .map_err(|error| tracing::error!(%error, "subscription item not serialisable"))
            .ok()
    };
    match feed {
        Feed::Heads => to_json(serde_json::to_value(convert::header(block, chain.config())))
            .into_iter()
            .collect(),
        Feed::Logs(filter) if filter.may_match(&block.logs_bloom) => convert::block_logs(block)
            .filter(|log| filter.matches_log(log))
            .filter_map(|log| to_json(serde_json::to_value(log)))
            .collect(),
        Feed::Logs(_) => Vec::new(),
    }
}

/// The blocks a log filter installed with cursor `next` covers on a poll at `head`:
/// from the cursor (or the filter's numeric `fromBlock`, if later) to the head (or its numeric
/// `toBlock`, if earlier). `from > to` means nothing to report.
pub fn log_poll_range(filter: &LogFilter, next: u64, head: u64) -> (u64, u64) {
    match filter.blocks {
        BlockSelection::Hash(_) => (1, 0),
        BlockSelection::Range { from, to } => {
            // Tags ("latest", …) name the head at install time, which the cursor already is.
            let from = match from {
                Some(BlockNumberOrTag::Number(from)) => from.max(next),
                _ => next,
            };
            let to = match to {
                Some(BlockNumberOrTag::Number(to)) => to.min(head),
                _ => head,
            };
            (from, to)
        }
    }
}

/// Sealed blocks in order, each once, from the head at creation on.
pub struct BlockFeed {
    chain: Arc<dyn Chain>,
    receiver: Receiver<Arc<Block>>,
    /// The next block to hand out; unknown until the head or a first block is seen.
    next: Option<u64>,
    /// The highest block known sealed: `next..=target` is fetched from the chain.
    target: u64,
}

impl BlockFeed {
    pub async fn new(chain: Arc<dyn Chain>) -> Self {
        let receiver = chain.subscribe_blocks();
        let head = chain.head().await.ok();
        Self {
            chain,
            receiver,
            next: head.map(|h| h + 1),
            target: head.unwrap_or_default(),
        }
    }

    /// The next sealed block; `None` once the chain stops sealing or a sealed block cannot be
    /// read.
    pub async fn next(&mut self) -> Option<Arc<Block>> {
        loop {
            if let Some(next) = self.next
                && next <= self.target
            {
                return match self.chain.block_by_number(next).await {
                    Ok(Some(block)) => {
                        self.next = Some(next + 1);
                        Some(block)
                    }
                    Ok(None) => {
                        tracing::warn!(block = next, "sealed block missing; feed ends");
                        None
                    }
                    Err(error) => {
                        tracing::warn!(block = next, %error, "sealed block unreadable; feed ends");
                        None
                    }
                };
            }
            match self.receiver.recv().await {
                Ok(block) => {
                    let next = *self.next.get_or_insert(block.number);
                    if block.number == next {
                        self.next = Some(next + 1);
                        self.target = self.target.max(block.number);
                        return Some(block);
                    }
                    // Older: already handed out. Newer: fetch the gap first.
                    self.target = self.target.max(block.number);
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "block feed lagged; catching up from the chain");
                    if let Ok(head) = self.chain.head().await {
                        self.target = self.target.max(head);
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_polls_cover_new_blocks_within_the_filter_range() {
        let open = LogFilter::default();
        assert_eq!(log_poll_range(&open, 5, 9), (5, 9));
        let bounded = LogFilter {
            blocks: BlockSelection::Range {
                from: Some(BlockNumberOrTag::Number(7)),
                to: Some(BlockNumberOrTag::Number(8)),
            },
            ..LogFilter::default()
        };
        assert_eq!(log_poll_range(&bounded, 5, 9), (7, 8));
        assert_eq!(
            log_poll_range(&bounded, 9, 12),
            (9, 8),
            "past toBlock: nothing"
        );
        let latest = LogFilter {
            blocks: BlockSelection::Range {
                from: Some(BlockNumberOrTag::Latest),
                to: None,
            },
            ..LogFilter::default()
        };
        assert_eq!(
            log_poll_range(&latest, 5, 9),
            (5, 9),
            "every block since install"
        );
    }
}
