//! What an EVM deployment chooses: chain id, hard fork, fee recipient, limits; and the block
//! context the caller passes with every execution.

use alloy_primitives::{Address, B256};
use revm::primitives::hardfork::SpecId;

/// PArSEC's chain id (0xcbdc).
pub const DEFAULT_CHAIN_ID: u64 = 0xcbdc;
/// geth's `txMaxSize`: 4 slots of 32 KiB.
pub const DEFAULT_MAX_TX_BYTES: usize = 4 * 32 * 1024;
/// Block gas limit reported to clients and enforced per transaction.
pub const DEFAULT_BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// geth's default `--rpc.gascap` for `eth_call` / `eth_estimateGas`.
pub const DEFAULT_CALL_GAS_CAP: u64 = 50_000_000;

/// Chain-wide settings of the EVM runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmConfig {
    /// Checked against every signed transaction and returned by CHAINID.
    pub chain_id: u64,
    /// The hard fork whose rules apply (gas schedule, opcodes, precompiles).
    pub spec: SpecId,
    /// Credited with the priority fee of every transaction (the base fee is burnt, as on
    /// Ethereum). Note: with non-zero tips, every transaction writes this account, which
    /// serialises them; a zero-fee deployment never writes it.
    pub fee_recipient: Address,
    /// A transaction's gas limit may not exceed it.
    pub block_gas_limit: u64,
    /// Largest raw transaction accepted.
    pub max_tx_bytes: usize,
    /// Whether legacy transactions without EIP-155 replay protection are accepted (needed for
    /// the keyless deployment of well-known factories such as Nick's CREATE2 deployer).
    pub allow_unprotected_txs: bool,
    /// Gas given to `eth_call` / `eth_estimateGas` when the request names none, and their cap.
    pub call_gas_cap: u64,
}

impl Default for EvmConfig {
    fn default() -> Self {
        Self {
            chain_id: DEFAULT_CHAIN_ID,
            // Current mainnet rules, and revm's default.
            spec: SpecId::OSAKA,
            fee_recipient: Address::ZERO,
            block_gas_limit: DEFAULT_BLOCK_GAS_LIMIT,
            max_tx_bytes: DEFAULT_MAX_TX_BYTES,
            allow_unprotected_txs: true,
            call_gas_cap: DEFAULT_CALL_GAS_CAP,
        }
    }
}

/// The block a transaction executes in: what NUMBER, TIMESTAMP and BASEFEE return. The
/// JSON-RPC layer reports the same values for the logical block it stamps the receipt with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockInfo {
    pub number: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    /// Wei per gas; zero is allowed (a zero-fee deployment).
    pub base_fee: u64,
    /// PREVRANDAO; logical blocks have no beacon randomness, so callers usually pass zero.
    pub prevrandao: B256,
}

impl EvmConfig {
    /// revm's block for `info` under these rules: what NUMBER, TIMESTAMP, BASEFEE, COINBASE,
    /// GASLIMIT and PREVRANDAO return.
    pub fn block_env(&self, info: &BlockInfo) -> revm::context::BlockEnv {
        revm::context::BlockEnv {
            number: alloy_primitives::U256::from(info.number),
            timestamp: alloy_primitives::U256::from(info.timestamp),
            basefee: info.base_fee,
            beneficiary: self.fee_recipient,
            gas_limit: self.block_gas_limit,
            prevrandao: Some(info.prevrandao),
            difficulty: alloy_primitives::U256::ZERO,
            ..revm::context::BlockEnv::default()
        }
    }

    /// revm's configuration for these rules; the one place where ours maps onto revm's.
    pub fn cfg_env(&self) -> revm::context::CfgEnv {
        let mut cfg = revm::context::CfgEnv::new_with_spec(self.spec);
        cfg.chain_id = self.chain_id;
        cfg
    }
}
