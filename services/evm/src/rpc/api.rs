//! The JSON-RPC methods (geth's names, parameters and result shapes) over a [`Chain`].

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U64, U256, keccak256};
use alloy_rpc_types_eth::{
    BlockId, BlockNumberOrTag, FeeHistory, FilterChanges, Index, TransactionReceipt,
    TransactionRequest,
};
use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;
use tokio::time::Instant;

use crate::chain::{Block, Chain, TxLookup};
use crate::rpc::convert::{self, RpcBlock, RpcLog};
use crate::rpc::error::{
    call_error, chain_error, internal_error, invalid_params, limit_exceeded, send_error,
    server_error,
};
use crate::rpc::fees;
use crate::rpc::filters::{FilterKind, FilterRegistry};
use crate::rpc::log_filter::{BlockSelection, LogFilter};
use crate::rpc::logs::{self, LogLimits};
use crate::rpc::params::{HexOrDecimal, block_number, call_request, check_state_block};
use crate::rpc::pubsub;

type RpcTransaction = alloy_rpc_types_eth::Transaction;

/// geth's cap on `eth_feeHistory`'s block count (`maxBlockFetchers`-bounded `FeeHistoryMax`).
const MAX_FEE_HISTORY_BLOCKS: u64 = 1024;

#[rpc(server)]
pub trait EthRpc {
    #[method(name = "web3_clientVersion")]
    fn client_version(&self) -> RpcResult<String>;

    #[method(name = "web3_sha3")]
    fn sha3(&self, data: Bytes) -> RpcResult<B256>;

    #[method(name = "net_version")]
    fn net_version(&self) -> RpcResult<String>;

    #[method(name = "net_listening")]
    fn net_listening(&self) -> RpcResult<bool>;

    #[method(name = "net_peerCount")]
    fn net_peer_count(&self) -> RpcResult<U64>;

    #[method(name = "eth_chainId")]
    fn chain_id(&self) -> RpcResult<U64>;

    #[method(name = "eth_syncing")]
    fn syncing(&self) -> RpcResult<bool>;

    #[method(name = "eth_mining")]
    fn mining(&self) -> RpcResult<bool>;

    #[method(name = "eth_hashrate")]
    fn hashrate(&self) -> RpcResult<U64>;

    #[method(name = "eth_coinbase")]
    fn coinbase(&self) -> RpcResult<Address>;

    #[method(name = "eth_accounts")]
    fn accounts(&self) -> RpcResult<Vec<Address>>;

    #[method(name = "eth_blockNumber")]
    async fn block_number(&self) -> RpcResult<U64>;

    #[method(name = "eth_gasPrice")]
    fn gas_price(&self) -> RpcResult<U256>;

    #[method(name = "eth_maxPriorityFeePerGas")]
    fn max_priority_fee_per_gas(&self) -> RpcResult<U256>;

    #[method(name = "eth_feeHistory")]
    async fn fee_history(
        &self,
        block_count: HexOrDecimal,
        newest_block: BlockNumberOrTag,
        reward_percentiles: Option<Vec<f64>>,
    ) -> RpcResult<FeeHistory>;

    #[method(name = "eth_getBlockByNumber")]
    async fn block_by_number(
        &self,
        block: BlockNumberOrTag,
        full: Option<bool>,
    ) -> RpcResult<Option<RpcBlock>>;

    #[method(name = "eth_getBlockByHash")]
    async fn block_by_hash(&self, hash: B256, full: Option<bool>) -> RpcResult<Option<RpcBlock>>;

    #[method(name = "eth_getBlockTransactionCountByNumber")]
    async fn block_transaction_count_by_number(
        &self,
        block: BlockNumberOrTag,
    ) -> RpcResult<Option<U64>>;

    #[method(name = "eth_getBlockTransactionCountByHash")]
    async fn block_transaction_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>>;

    #[method(name = "eth_getUncleCountByBlockNumber")]
    async fn uncle_count_by_number(&self, block: BlockNumberOrTag) -> RpcResult<Option<U64>>;

    #[method(name = "eth_getUncleCountByBlockHash")]
    async fn uncle_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>>;

    #[method(name = "eth_getBlockReceipts")]
    async fn block_receipts(&self, block: BlockId) -> RpcResult<Option<Vec<TransactionReceipt>>>;

    #[method(name = "eth_getBalance")]
    async fn balance(&self, address: Address, block: Option<BlockId>) -> RpcResult<U256>;

    #[method(name = "eth_getTransactionCount")]
    async fn transaction_count(&self, address: Address, block: Option<BlockId>) -> RpcResult<U64>;

    #[method(name = "eth_getCode")]
    async fn code(&self, address: Address, block: Option<BlockId>) -> RpcResult<Bytes>;

    #[method(name = "eth_getStorageAt")]
    async fn storage_at(
        &self,
        address: Address,
        slot: U256,
        block: Option<BlockId>,
    ) -> RpcResult<B256>;

    #[method(name = "eth_call")]
    async fn call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<serde_json::Value>,
        block_overrides: Option<serde_json::Value>,
    ) -> RpcResult<Bytes>;

    #[method(name = "eth_estimateGas")]
    async fn estimate_gas(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<serde_json::Value>,
    ) -> RpcResult<U64>;

    #[method(name = "eth_sendRawTransaction")]
    async fn send_raw_transaction(&self, raw: Bytes) -> RpcResult<B256>;

    #[method(name = "eth_getTransactionByHash")]
    async fn transaction_by_hash(&self, hash: B256) -> RpcResult<Option<RpcTransaction>>;

    #[method(name = "eth_getTransactionReceipt")]
    async fn transaction_receipt(&self, hash: B256) -> RpcResult<Option<TransactionReceipt>>;

    #[method(name = "eth_getTransactionByBlockNumberAndIndex")]
    async fn transaction_by_block_number_and_index(
        &self,
        block: BlockNumberOrTag,
        index: Index,
    ) -> RpcResult<Option<RpcTransaction>>;

    #[method(name = "eth_getTransactionByBlockHashAndIndex")]
    async fn transaction_by_block_hash_and_index(
        &self,
        hash: B256,
        index: Index,
    ) -> RpcResult<Option<RpcTransaction>>;

    #[method(name = "eth_getLogs")]
    async fn logs(&self, filter: LogFilter) -> RpcResult<Vec<RpcLog>>;

    #[method(name = "eth_newFilter")]
    async fn new_filter(&self, filter: LogFilter) -> RpcResult<String>;

    #[method(name = "eth_newBlockFilter")]
    async fn new_block_filter(&self) -> RpcResult<String>;

    #[method(name = "eth_newPendingTransactionFilter")]
    fn new_pending_transaction_filter(&self, full: Option<bool>) -> RpcResult<String>;

    #[method(name = "eth_getFilterChanges")]
    async fn filter_changes(&self, id: String) -> RpcResult<FilterChanges>;

    #[method(name = "eth_getFilterLogs")]
    async fn filter_logs(&self, id: String) -> RpcResult<Vec<RpcLog>>;

    #[method(name = "eth_uninstallFilter")]
    fn uninstall_filter(&self, id: String) -> RpcResult<bool>;

    #[subscription(
        name = "eth_subscribe" => "eth_subscription",
        unsubscribe = "eth_unsubscribe",
        item = serde_json::Value
    )]
    async fn subscribe(
        &self,
        kind: String,
        params: Option<serde_json::Value>,
    ) -> SubscriptionResult;
}

/// Fee and query settings of the API (from [`crate::rpc::RpcOptions`]).
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// `eth_gasPrice`; `None`: base fee + `priority_fee`.
    pub gas_price: Option<u128>,
    pub priority_fee: u128,
    pub logs: LogLimits,
}

pub struct EthApi {
    chain: Arc<dyn Chain>,
    filters: Arc<FilterRegistry>,
    settings: ApiSettings,
}

impl EthApi {
    pub fn new(chain: Arc<dyn Chain>, filters: Arc<FilterRegistry>, settings: ApiSettings) -> Self {
        Self {
            chain,
            filters,
            settings,
        }
    }

    async fn head(&self) -> RpcResult<u64> {
        self.chain.head().await.map_err(|e| chain_error(&e))
    }

    async fn block_at(&self, tag: BlockNumberOrTag) -> RpcResult<Option<Arc<Block>>> {
        let number = block_number(tag, self.head().await?);
        self.chain
            .block_by_number(number)
            .await
            .map_err(|e| chain_error(&e))
    }

    async fn block_with_hash(&self, hash: B256) -> RpcResult<Option<Arc<Block>>> {
        self.chain
            .block_by_hash(hash)
            .await
            .map_err(|e| chain_error(&e))
    }

    async fn block_of(&self, id: BlockId) -> RpcResult<Option<Arc<Block>>> {
        match id {
            BlockId::Hash(hash) => self.block_with_hash(hash.block_hash).await,
            BlockId::Number(tag) => self.block_at(tag).await,
        }
    }

    /// Refuses state reads at any block but the latest (see [`check_state_block`]).
    async fn check_state(&self, block: Option<BlockId>) -> RpcResult<()> {
        let number = match block {
            None
            | Some(BlockId::Number(
                BlockNumberOrTag::Latest
                | BlockNumberOrTag::Pending
                | BlockNumberOrTag::Safe
                | BlockNumberOrTag::Finalized,
            )) => return Ok(()),
            Some(BlockId::Number(BlockNumberOrTag::Earliest)) => 0,
            Some(BlockId::Number(BlockNumberOrTag::Number(number))) => number,
            Some(BlockId::Hash(hash)) => match self.block_with_hash(hash.block_hash).await? {
                Some(block) => block.number,
                None => return Err(server_error("header not found")),
            },
        };
        check_state_block(number, self.head().await?)
    }

    fn base_fee(&self) -> u128 {
        u128::from(self.chain.base_fee())
    }

    fn limits(&self) -> LogLimits {
        self.settings.logs
    }

    fn install(&self, kind: FilterKind) -> RpcResult<String> {
        self.filters
            .install(kind, Instant::now())
            .map_err(|e| limit_exceeded(e.to_string()))
    }
}

/// A lookup whose index lies inside its block (a backend bug must not panic a request).
fn checked(found: Option<TxLookup>) -> RpcResult<Option<TxLookup>> {
    match found {
        Some(lookup) if lookup.index >= lookup.block.transactions.len() => {
            Err(internal_error(format!(
                "transaction index {} outside block {} ({} transactions)",
                lookup.index,
                lookup.block.number,
                lookup.block.transactions.len()
            )))
        }
        other => Ok(other),
    }
}

fn filter_not_found() -> ErrorObjectOwned {
    // geth's words ("filter not found"), which ethers and web3.js match to reinstall.
    server_error("filter not found")
}

fn no_overrides(overrides: Option<&serde_json::Value>, what: &str) -> RpcResult<()> {
    match overrides {
        None | Some(serde_json::Value::Null) => Ok(()),
        Some(serde_json::Value::Object(map)) if map.is_empty() => Ok(()),
        Some(_) => Err(invalid_params(format!("{what} are not supported"))),
    }
}

#[async_trait]
impl EthRpcServer for EthApi {
    fn client_version(&self) -> RpcResult<String> {
        Ok(format!("parsec/v{}", env!("CARGO_PKG_VERSION")))
    }

    fn sha3(&self, data: Bytes) -> RpcResult<B256> {
        Ok(keccak256(&data))
    }

    fn net_version(&self) -> RpcResult<String> {
        // Decimal, as geth (the network id is the chain id here).
        Ok(self.chain.config().chain_id.to_string())
    }

    fn net_listening(&self) -> RpcResult<bool> {
        Ok(true)
    }

    fn net_peer_count(&self) -> RpcResult<U64> {
        Ok(U64::ZERO)
    }

    fn chain_id(&self) -> RpcResult<U64> {
        Ok(U64::from(self.chain.config().chain_id))
    }

    fn syncing(&self) -> RpcResult<bool> {
        Ok(false)
    }

    fn mining(&self) -> RpcResult<bool> {
        Ok(false)
    }

    fn hashrate(&self) -> RpcResult<U64> {
        Ok(U64::ZERO)
    }

    fn coinbase(&self) -> RpcResult<Address> {
        Ok(self.chain.config().fee_recipient)
    }

    fn accounts(&self) -> RpcResult<Vec<Address>> {
        Ok(self.chain.accounts())
    }

    async fn block_number(&self) -> RpcResult<U64> {
        Ok(U64::from(self.head().await?))
    }

    fn gas_price(&self) -> RpcResult<U256> {
        let price = self
            .settings
            .gas_price
            .unwrap_or_else(|| self.base_fee().saturating_add(self.settings.priority_fee));
        Ok(U256::from(price))
    }

    fn max_priority_fee_per_gas(&self) -> RpcResult<U256> {
        Ok(U256::from(self.settings.priority_fee))
    }

    async fn fee_history(
        &self,
        block_count: HexOrDecimal,
        newest_block: BlockNumberOrTag,
        reward_percentiles: Option<Vec<f64>>,
    ) -> RpcResult<FeeHistory> {
        let percentiles = reward_percentiles.unwrap_or_default();
        fees::check_percentiles(&percentiles).map_err(invalid_params)?;
        let head = self.head().await?;
        let newest = block_number(newest_block, head);
        if newest > head {
            return Err(server_error(format!(
                "request beyond head block: requested {newest}, head {head}"
            )));
        }
        let count = block_count.0.min(MAX_FEE_HISTORY_BLOCKS).min(newest + 1);
        if count == 0 {
            return Ok(FeeHistory::default());
        }
        let oldest = newest + 1 - count;
        let mut history = FeeHistory {
            oldest_block: oldest,
            reward: (!percentiles.is_empty()).then(Vec::new),
            ..FeeHistory::default()
        };
        for number in oldest..=newest {
            let block = logs::fetch(self.chain.as_ref(), number).await?;
            history.base_fee_per_gas.push(u128::from(block.base_fee));
            let ratio = if block.gas_limit == 0 {
                0.0
            } else {
                block.gas_used as f64 / block.gas_limit as f64
            };
            history.gas_used_ratio.push(ratio);
            if let Some(rewards) = history.reward.as_mut() {
                rewards.push(fees::rewards(&block, &percentiles));
            }
        }
        // The base fee is configuration: the next block's is today's.
        history.base_fee_per_gas.push(self.base_fee());
        Ok(history)
    }

    async fn block_by_number(
        &self,
        block: BlockNumberOrTag,
        full: Option<bool>,
    ) -> RpcResult<Option<RpcBlock>> {
        let config = self.chain.config();
        Ok(self
            .block_at(block)
            .await?
            .map(|b| convert::block(&b, config, full.unwrap_or(false))))
    }

    async fn block_by_hash(&self, hash: B256, full: Option<bool>) -> RpcResult<Option<RpcBlock>> {
        let config = self.chain.config();
        Ok(self
            .block_with_hash(hash)
            .await?
            .map(|b| convert::block(&b, config, full.unwrap_or(false))))
    }

    async fn block_transaction_count_by_number(
        &self,
        block: BlockNumberOrTag,
    ) -> RpcResult<Option<U64>> {
        Ok(self
            .block_at(block)
            .await?
            .map(|b| U64::from(b.transactions.len())))
    }

    async fn block_transaction_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>> {
        Ok(self
            .block_with_hash(hash)
            .await?
            .map(|b| U64::from(b.transactions.len())))
    }

    async fn uncle_count_by_number(&self, block: BlockNumberOrTag) -> RpcResult<Option<U64>> {
        Ok(self.block_at(block).await?.map(|_| U64::ZERO))
    }

    async fn uncle_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>> {
        Ok(self.block_with_hash(hash).await?.map(|_| U64::ZERO))
    }

    async fn block_receipts(&self, block: BlockId) -> RpcResult<Option<Vec<TransactionReceipt>>> {
        Ok(self.block_of(block).await?.map(|block| {
            (0..block.transactions.len())
                .map(|index| convert::receipt(&block, index))
                .collect()
        }))
    }

    async fn balance(&self, address: Address, block: Option<BlockId>) -> RpcResult<U256> {
        self.check_state(block).await?;
        let account = self
            .chain
            .account(address)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(account.balance)
    }

    async fn transaction_count(&self, address: Address, block: Option<BlockId>) -> RpcResult<U64> {
        self.check_state(block).await?;
        // Latest and pending alike count the transactions this agent is still running: a
        // client that sends, then asks for "latest" before the seal, must not reuse a nonce.
        let nonce = self
            .chain
            .pending_nonce(address)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(U64::from(nonce))
    }

    async fn code(&self, address: Address, block: Option<BlockId>) -> RpcResult<Bytes> {
        self.check_state(block).await?;
        let account = self
            .chain
            .account(address)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(account.code)
    }

    async fn storage_at(
        &self,
        address: Address,
        slot: U256,
        block: Option<BlockId>,
    ) -> RpcResult<B256> {
        self.check_state(block).await?;
        let value = self
            .chain
            .storage(address, slot)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(B256::from(value))
    }

    async fn call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<serde_json::Value>,
        block_overrides: Option<serde_json::Value>,
    ) -> RpcResult<Bytes> {
        no_overrides(state_overrides.as_ref(), "state overrides")?;
        no_overrides(block_overrides.as_ref(), "block overrides")?;
        let request = call_request(request)?;
        self.check_state(block).await?;
        let success = self.chain.call(request).await.map_err(call_error)?;
        Ok(success.output)
    }

    async fn estimate_gas(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<serde_json::Value>,
    ) -> RpcResult<U64> {
        no_overrides(state_overrides.as_ref(), "state overrides")?;
        let request = call_request(request)?;
        self.check_state(block).await?;
        let gas = self.chain.estimate_gas(request).await.map_err(call_error)?;
        Ok(U64::from(gas))
    }

    async fn send_raw_transaction(&self, raw: Bytes) -> RpcResult<B256> {
        self.chain
            .send_raw_transaction(raw)
            .await
            .map_err(send_error)
    }

    async fn transaction_by_hash(&self, hash: B256) -> RpcResult<Option<RpcTransaction>> {
        let found = self
            .chain
            .transaction(hash)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(checked(found)?.map(|lookup| convert::transaction(&lookup.block, lookup.index)))
    }

    async fn transaction_receipt(&self, hash: B256) -> RpcResult<Option<TransactionReceipt>> {
        let found = self
            .chain
            .transaction(hash)
            .await
            .map_err(|e| chain_error(&e))?;
        Ok(checked(found)?.map(|lookup| convert::receipt(&lookup.block, lookup.index)))
    }

    async fn transaction_by_block_number_and_index(
        &self,
        block: BlockNumberOrTag,
        index: Index,
    ) -> RpcResult<Option<RpcTransaction>> {
        let index = usize::from(index);
        Ok(self
            .block_at(block)
            .await?
            .filter(|b| index < b.transactions.len())
            .map(|b| convert::transaction(&b, index)))
    }

    async fn transaction_by_block_hash_and_index(
        &self,
        hash: B256,
        index: Index,
    ) -> RpcResult<Option<RpcTransaction>> {
        let index = usize::from(index);
        Ok(self
            .block_with_hash(hash)
            .await?
            .filter(|b| index < b.transactions.len())
            .map(|b| convert::transaction(&b, index)))
    }

    async fn logs(&self, filter: LogFilter) -> RpcResult<Vec<RpcLog>> {
        logs::query(self.chain.as_ref(), &filter, self.limits()).await
    }

    async fn new_filter(&self, filter: LogFilter) -> RpcResult<String> {
        if let BlockSelection::Hash(_) = filter.blocks {
            return Err(invalid_params(
                "blockHash is not supported by eth_newFilter (use eth_getLogs)",
            ));
        }
        let next = self.head().await? + 1;
        self.install(FilterKind::Logs { filter, next })
    }

    async fn new_block_filter(&self) -> RpcResult<String> {
        let next = self.head().await? + 1;
        self.install(FilterKind::Blocks { next })
    }

    fn new_pending_transaction_filter(&self, _full: Option<bool>) -> RpcResult<String> {
        self.install(FilterKind::PendingTransactions)
    }

    async fn filter_changes(&self, id: String) -> RpcResult<FilterChanges> {
        let kind = self
            .filters
            .get(&id, Instant::now())
            .ok_or_else(filter_not_found)?;
        let head = self.head().await?;
        match kind {
            FilterKind::PendingTransactions => Ok(FilterChanges::Hashes(Vec::new())),
            FilterKind::Blocks { next } => {
                if next > head {
                    return Ok(FilterChanges::Hashes(Vec::new()));
                }
                // A client that stopped polling catches up over several polls.
                let last = head.min(next + self.limits().max_blocks - 1);
                let mut hashes = Vec::new();
                for number in next..=last {
                    hashes.push(logs::fetch(self.chain.as_ref(), number).await?.hash);
                }
                self.filters.advance(&id, last + 1);
                Ok(FilterChanges::Hashes(hashes))
            }
            FilterKind::Logs { filter, next } => {
                let (from, to) = pubsub::log_poll_range(&filter, next, head);
                if from > to {
                    return Ok(FilterChanges::Logs(Vec::new()));
                }
                let to = to.min(from + self.limits().max_blocks - 1);
                let logs =
                    logs::in_range(self.chain.as_ref(), &filter, from, to, self.limits()).await?;
                self.filters.advance(&id, to + 1);
                Ok(FilterChanges::Logs(logs))
            }
        }
    }

    async fn filter_logs(&self, id: String) -> RpcResult<Vec<RpcLog>> {
        match self.filters.get(&id, Instant::now()) {
            Some(FilterKind::Logs { filter, .. }) => {
                logs::query(self.chain.as_ref(), &filter, self.limits()).await
            }
            _ => Err(filter_not_found()),
        }
    }

    fn uninstall_filter(&self, id: String) -> RpcResult<bool> {
        Ok(self.filters.uninstall(&id, Instant::now()))
    }

    async fn subscribe(
        &self,
        pending: PendingSubscriptionSink,
        kind: String,
        params: Option<serde_json::Value>,
    ) -> SubscriptionResult {
        pubsub::subscribe(Arc::clone(&self.chain), pending, &kind, params).await
    }
}
