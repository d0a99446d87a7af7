//! The floor of an ERC-20 transfer: decoding it and recovering its sender, then executing it in
//! plain revm over an in-memory database. Everything the platform spends beyond that (JSON-RPC,
//! locks, Raft, blocks) is its overhead; the bench measures the floor in the same run, on the
//! same machine, so that the two compare.

use std::time::Instant;

use alloy_primitives::{Address, B256, TxKind, U256};
use parsec_evm::{BlockInfo, EvmConfig, decode_transaction};
use revm::database::{CacheDB, EmptyDB};
use revm::state::AccountInfo;
use revm::{Context, ExecuteCommitEvm, MainBuilder, MainContext};
use serde::Serialize;

use crate::erc20::{Account, DEPLOY_GAS, Fees, token_creation_code};
use crate::signer::Secp256k1Signer;

/// Microseconds per transfer, on one core.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Floor {
    /// Decoding the raw transaction and recovering its sender (libsecp256k1).
    pub recover_us: f64,
    /// Executing the `transfer` in revm over a `CacheDB`, committing its state.
    pub execute_us: f64,
}

impl Floor {
    pub fn total_us(&self) -> f64 {
        self.recover_us + self.execute_us
    }
}

/// Measures the floor over `transfers` transfers between 64 accounts, with the run's fees.
pub(crate) fn measure(fees: Fees, transfers: usize) -> Result<Floor, String> {
    let config = EvmConfig {
        chain_id: fees.chain_id,
        ..EvmConfig::default()
    };
    let block = BlockInfo {
        number: 1,
        timestamp: 0,
        base_fee: u64::try_from(fees.max_fee / 2).unwrap_or(u64::MAX),
        prevrandao: B256::ZERO,
    };
    let mut db = CacheDB::new(EmptyDB::default());
    let mut deployer = Account::new(Secp256k1Signer::random(), 0);
    let mut accounts: Vec<Account> = (0..64)
        .map(|_| Account::new(Secp256k1Signer::random(), 0))
        .collect();
    for address in accounts
        .iter()
        .map(|a| a.signer.address())
        .chain([deployer.signer.address()])
    {
        db.insert_account_info(address, AccountInfo::from_balance(U256::from(u128::MAX)));
    }
    let token = deployer.signer.address().create(0);
    let supply = U256::from(u64::MAX);
    let mut setup = vec![deployer.sign(
        fees,
        TxKind::Create,
        token_creation_code(supply).map_err(|e| e.to_string())?,
        DEPLOY_GAS,
    )];
    let addresses: Vec<Address> = accounts.iter().map(|a| a.signer.address()).collect();
    for to in &addresses {
        setup.push(deployer.sign_transfer_of(fees, token, *to, U256::from(1u64 << 40)));
    }
    let signed: Vec<_> = (0..transfers)
        .map(|i| {
            let to = addresses[(i + 1) % addresses.len()];
            accounts[i % addresses.len()].sign_transfer(fees, token, to)
        })
        .collect();

    let mut evm = Context::mainnet()
        .with_db(&mut db)
        .with_cfg(config.cfg_env())
        .with_block(config.block_env(&block))
        .build_mainnet();
    for raw in &setup {
        let tx = decode_transaction(raw, &config).map_err(|e| e.to_string())?;
        let done = evm
            .transact_commit(tx.tx_env())
            .map_err(|e| e.to_string())?;
        if !done.is_success() {
            return Err(format!("floor set-up transaction failed: {done:?}"));
        }
    }
    let started = Instant::now();
    let decoded = signed
        .iter()
        .map(|raw| decode_transaction(raw, &config).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let recovered = started.elapsed();
    let started = Instant::now();
    for tx in &decoded {
        let done = evm
            .transact_commit(tx.tx_env())
            .map_err(|e| e.to_string())?;
        if !done.is_success() {
            return Err(format!("floor transfer failed: {done:?}"));
        }
    }
    let executed = started.elapsed();
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / transfers as f64;
    Ok(Floor {
        recover_us: per(recovered),
        execute_us: per(executed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_transfer_succeeds_and_costs_something() {
        let fees = Fees {
            chain_id: 0xcbdc,
            max_fee: 2_000_000_000,
        };
        let floor = measure(fees, 200).unwrap();
        assert!(
            floor.recover_us > 0.0 && floor.execute_us > 0.0,
            "{floor:?}"
        );
    }
}
