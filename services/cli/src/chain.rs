//! The Ethereum side of an agent: flags (each also an environment variable, which is how the
//! operator sets them) and the well-known development accounts.

use alloy_primitives::{Address, U256, address};
use clap::Args;
use parsec_core::Settings;
use parsec_evm::rpc::{RateLimit, RpcHandle, RpcOptions};
use parsec_evm::{ChainSettings, DEFAULT_CHAIN_ID, EvmConfig};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// The first ten accounts of the standard development mnemonic ("test test test test test test
/// test test test test test junk", m/44'/60'/0'/0/i) that Hardhat, Anvil and Foundry use.
pub const DEV_ACCOUNTS: [Address; 10] = [
    address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
    address!("70997970C51812dc3A010C7d01b50e0d17dc79C8"),
    address!("3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"),
    address!("90F79bf6EB2c4f870365E785982E1f101E93b906"),
    address!("15d34AAf54267DB7D7c367839AAf71A00a2C6A65"),
    address!("9965507D1a55bcC2695C58ba16FB37d819B0A4dc"),
    address!("976EA74026E726554dB657fA54763abd0C3a0aa9"),
    address!("14dC79964da2C08b23698B3D3cc7Ca32193d9955"),
    address!("23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"),
    address!("a0Ee7A142d267C1f36714E4a8F75612F20a79720"),
];

/// What each development account holds: 10 000 ether, as on Hardhat.
pub fn dev_balance() -> U256 {
    U256::from(10_000u64) * U256::from(10u64).pow(U256::from(18u64))
}

#[derive(Args, Clone, Debug)]
pub struct ChainArgs {
    /// Chain id (EIP-155) transactions must carry.
    #[arg(long, env = "PARSEC_CHAIN_ID", default_value_t = DEFAULT_CHAIN_ID)]
    pub chain_id: u64,
    /// Base fee in wei per gas (zero allowed).
    #[arg(long, env = "PARSEC_BASE_FEE_WEI", default_value_t = 0)]
    pub base_fee_wei: u64,
    /// Who receives the fees.
    #[arg(long, env = "PARSEC_FEE_RECIPIENT", default_value_t = Address::ZERO)]
    pub fee_recipient: Address,
    /// Fund the ten standard development accounts (if empty) and list them in eth_accounts.
    #[arg(long, env = "PARSEC_DEV_ACCOUNTS")]
    pub dev_accounts: Option<bool>,
    /// How long a future-nonce transaction waits for its predecessors, in milliseconds.
    #[arg(long, env = "PARSEC_NONCE_GAP_TIMEOUT_MS", default_value_t = 10_000)]
    pub nonce_gap_timeout_ms: u64,
}

impl ChainArgs {
    /// Whether the development accounts are on (`default` when the flag is absent).
    pub fn dev_accounts_or(&self, default: bool) -> bool {
        self.dev_accounts.unwrap_or(default)
    }

    pub fn settings(&self, dev_accounts: bool) -> ChainSettings {
        ChainSettings {
            evm: EvmConfig {
                chain_id: self.chain_id,
                fee_recipient: self.fee_recipient,
                ..EvmConfig::default()
            },
            base_fee: self.base_fee_wei,
            nonce_gap_timeout: Duration::from_millis(self.nonce_gap_timeout_ms),
            accounts: if dev_accounts {
                DEV_ACCOUNTS.to_vec()
            } else {
                Vec::new()
            },
            ..ChainSettings::default()
        }
    }
}

/// Serves Ethereum JSON-RPC for `chain` on `listen` in the background, until the handle is
/// stopped or dropped.
pub async fn serve_rpc(
    chain: std::sync::Arc<parsec_evm::AgentChain>,
    listen: SocketAddr,
    settings: &Settings,
) -> Result<RpcHandle, crate::node::NodeError> {
    let rate_limit =
        NonZeroU32::new(settings.rpc_rate_limit_per_second).map(|per_second| RateLimit {
            per_second,
            burst: NonZeroU32::new(settings.rpc_rate_limit_burst).unwrap_or(per_second),
        });
    let options = RpcOptions {
        // No suggested tip: a tip credits the fee recipient, an account every transaction
        // would then write (and so serialise on).
        priority_fee: 0,
        rate_limit,
        max_connections_per_client: match settings.rpc_max_connections_per_client {
            0 => None,
            n => Some(n as usize),
        },
        ..RpcOptions::default()
    };
    let handle = parsec_evm::rpc::serve(chain, listen, options)
        .await
        .map_err(|e| crate::node::NodeError::Connect(format!("JSON-RPC on {listen}: {e}")))?;
    tracing::info!(url = %handle.http_url(), "serving Ethereum JSON-RPC");
    Ok(handle)
}
