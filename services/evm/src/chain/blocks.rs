//! Sealed blocks read back: which agents hold parts of a block (the ticket machine's ledger),
//! the parts themselves (the shards), assembled and cached. A sealed block never changes, so
//! the cache needs no invalidation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use alloy_primitives::B256;
use parking_lot::Mutex;
use parsec_broker::Broker;
use parsec_ticketer::{BlockClockSource, ClockView, SealedParts};

use crate::chain::ChainError;
use crate::chain::assemble::{Header, assemble, block_hash};
use crate::chain::block::{Block, BlockTx};
use crate::chain::record::{decode_part, part_key};

/// Blocks kept assembled.
const CACHED_BLOCKS: usize = 2_048;
/// Blocks whose part lists one ledger query fetches (empty blocks then cost nothing more).
const LEDGER_WINDOW: u64 = 1_024;

#[derive(Default)]
struct Cache {
    blocks: HashMap<u64, Arc<Block>>,
    order: VecDeque<u64>,
    /// Sealed blocks whose part list is known: `agents[n]`, empty for an empty block.
    ledger: BTreeMap<u64, Vec<u64>>,
}

/// Reads and caches sealed blocks.
pub struct BlockStore {
    broker: Arc<Broker>,
    source: Arc<dyn BlockClockSource>,
    base_fee: u64,
    gas_limit: u64,
    cache: Mutex<Cache>,
}

impl BlockStore {
    pub fn new(
        broker: Arc<Broker>,
        source: Arc<dyn BlockClockSource>,
        base_fee: u64,
        gas_limit: u64,
    ) -> Self {
        Self {
            broker,
            source,
            base_fee,
            gas_limit,
            cache: Mutex::default(),
        }
    }

    /// Sealed block `number` (the caller checks it is sealed).
    pub async fn block(&self, number: u64, view: &ClockView) -> Result<Arc<Block>, ChainError> {
        if let Some(block) = self.cache.lock().blocks.get(&number) {
            return Ok(Arc::clone(block));
        }
        let transactions = self.transactions(number).await?;
        let parent_hash = match number {
            0 => B256::ZERO,
            n => self.hash_of(n - 1).await?,
        };
        let header = Header {
            number,
            parent_hash,
            timestamp: view.timestamp(number),
            base_fee: self.base_fee,
            gas_limit: self.gas_limit,
        };
        let block = Arc::new(assemble(header, transactions));
        let mut cache = self.cache.lock();
        cache.blocks.insert(number, Arc::clone(&block));
        cache.order.push_back(number);
        while cache.order.len() > CACHED_BLOCKS {
            if let Some(old) = cache.order.pop_front() {
                cache.blocks.remove(&old);
            }
        }
        Ok(block)
    }

    /// The hash of block `number`, without assembling it when it is empty.
    async fn hash_of(&self, number: u64) -> Result<B256, ChainError> {
        if let Some(block) = self.cache.lock().blocks.get(&number) {
            return Ok(block.hash);
        }
        let transactions = self.transactions(number).await?;
        Ok(block_hash(
            number,
            transactions
                .iter()
                .flat_map(|(_, txs)| txs.iter().map(|tx| &tx.hash))
                .collect::<Vec<_>>(),
        ))
    }

    /// The parts of block `number`, by agent.
    async fn transactions(&self, number: u64) -> Result<Vec<(u64, Vec<BlockTx>)>, ChainError> {
        let agents = self.agents(number).await?;
        if agents.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<_> = agents
            .iter()
            .map(|agent| part_key(number, *agent))
            .collect();
        let values = self
            .broker
            .read(&keys)
            .await
            .map_err(|e| ChainError(format!("reading block {number}: {e}")))?;
        let mut parts = Vec::with_capacity(agents.len());
        for (agent, value) in agents.into_iter().zip(values) {
            let stored = decode_part(&value).map_err(|e| ChainError(e.to_string()))?;
            let txs = stored
                .iter()
                .map(|tx| tx.decode().map_err(|e| ChainError(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            parts.push((agent, txs));
        }
        Ok(parts)
    }

    /// The agents holding parts of sealed block `number`.
    async fn agents(&self, number: u64) -> Result<Vec<u64>, ChainError> {
        if let Some(agents) = self.cache.lock().ledger.get(&number) {
            return Ok(agents.clone());
        }
        let to = number.saturating_add(LEDGER_WINDOW - 1);
        let SealedParts {
            sealed,
            blocks: parts,
        } = self
            .source
            .parts(number, to)
            .await
            .map_err(|e| ChainError(format!("block ledger: {e}")))?;
        let mut known: BTreeMap<u64, Vec<u64>> =
            (number..=to.min(sealed)).map(|n| (n, Vec::new())).collect();
        for (block, agents) in parts {
            known.insert(block, agents);
        }
        let agents = known.get(&number).cloned().unwrap_or_default();
        let mut cache = self.cache.lock();
        cache.ledger.extend(known);
        // The ledger cache only needs to reach back as far as the block cache.
        while cache.ledger.len() > 4 * CACHED_BLOCKS {
            cache.ledger.pop_first();
        }
        Ok(agents)
    }
}
