//! `eth_getLogs` / `eth_getFilterLogs` / log filter polling: matching logs of a range of sealed
//! blocks, within the range and result caps.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use jsonrpsee::types::ErrorObjectOwned;

use crate::chain::{Block, Chain};
use crate::rpc::convert::{RpcLog, block_logs};
use crate::rpc::error::{
    chain_error, internal_error, invalid_params, limit_exceeded, server_error,
};
use crate::rpc::log_filter::{BlockSelection, LogFilter};
use crate::rpc::params::block_number;

/// Blocks fetched concurrently from the chain while scanning a range.
const FETCH_CONCURRENCY: usize = 8;

/// Caps on one log query.
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    /// Most blocks one query may span.
    pub max_blocks: u64,
    /// Most logs one query may return.
    pub max_logs: usize,
}

/// The logs `filter` selects, in block and log order.
pub async fn query(
    chain: &dyn Chain,
    filter: &LogFilter,
    limits: LogLimits,
) -> Result<Vec<RpcLog>, ErrorObjectOwned> {
    match filter.blocks {
        BlockSelection::Hash(hash) => {
            let block = chain
                .block_by_hash(hash)
                .await
                .map_err(|e| chain_error(&e))?
                .ok_or_else(|| server_error("unknown block"))?;
            let mut logs = Vec::new();
            collect(&block, filter, &mut logs, limits.max_logs)?;
            Ok(logs)
        }
        BlockSelection::Range { from, to } => {
            let head = chain.head().await.map_err(|e| chain_error(&e))?;
            let from = from.map_or(head, |tag| block_number(tag, head));
            let to = to.map_or(head, |tag| block_number(tag, head)).min(head);
            if from > to {
                // A range starting above the head is empty (clients poll "from next block").
                if from > head {
                    return Ok(Vec::new());
                }
                return Err(invalid_params(format!(
                    "invalid block range params: fromBlock {from} is after toBlock {to}"
                )));
            }
            in_range(chain, filter, from, to, limits).await
        }
    }
}

/// Matching logs of blocks `from..=to` (all sealed).
pub async fn in_range(
    chain: &dyn Chain,
    filter: &LogFilter,
    from: u64,
    to: u64,
    limits: LogLimits,
) -> Result<Vec<RpcLog>, ErrorObjectOwned> {
    let span = to - from + 1;
    if span > limits.max_blocks {
        return Err(limit_exceeded(format!(
            "block range too large: {span} blocks requested, at most {} per query; narrow fromBlock/toBlock",
            limits.max_blocks
        )));
    }
    let mut blocks = futures::stream::iter(from..=to)
        .map(|number| fetch(chain, number))
        .buffered(FETCH_CONCURRENCY);
    let mut logs = Vec::new();
    while let Some(block) = blocks.try_next().await? {
        collect(&block, filter, &mut logs, limits.max_logs)?;
    }
    Ok(logs)
}

/// Sealed block `number`; it must exist.
pub async fn fetch(chain: &dyn Chain, number: u64) -> Result<Arc<Block>, ErrorObjectOwned> {
    chain
        .block_by_number(number)
        .await
        .map_err(|e| chain_error(&e))?
        .ok_or_else(|| internal_error(format!("sealed block {number} is missing")))
}

/// Adds `block`'s logs that pass `filter` to `logs`, failing once there are more than `max`.
pub fn collect(
    block: &Block,
    filter: &LogFilter,
    logs: &mut Vec<RpcLog>,
    max: usize,
) -> Result<(), ErrorObjectOwned> {
    if !filter.may_match(&block.logs_bloom) {
        return Ok(());
    }
    for log in block_logs(block).filter(|log| filter.matches_log(log)) {
        if logs.len() >= max {
            return Err(limit_exceeded(format!(
                "query returned more than {max} results; narrow the block range or the filter"
            )));
        }
        logs.push(log);
    }
    Ok(())
}
