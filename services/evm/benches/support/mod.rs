//! What the EVM microbenchmarks share: criterion settings and the ERC-20 workload of
//! `parsec bench erc20` (the same OpenZeppelin token, `transfer`s of one unit, base fee and no
//! tip).
// Each bench file uses its own subset.
#![allow(dead_code, clippy::unwrap_used)]

use alloy_primitives::{Address, Bytes, U256, hex};
use alloy_sol_types::{SolCall, SolValue, sol};
use criterion::Criterion;
use std::time::Duration;

pub const GWEI: u64 = 1_000_000_000;
/// Gas limit of a transfer, as `parsec bench erc20` signs it.
pub const TRANSFER_GAS: u64 = 100_000;
/// Gas limit of the token's deployment.
pub const DEPLOY_GAS: u64 = 3_000_000;
/// Distinct recipients the transfers rotate over.
pub const RECIPIENTS: usize = 256;

sol! {
    function transfer(address to, uint256 amount) external returns (bool);
}

/// The token (services/evm/contracts, OpenZeppelin 5): `constructor(name, symbol, supply)`
/// mints `supply` to the deployer.
const TOKEN_ARTIFACT: &str = include_str!("../../contracts/artifacts/ParsecToken.json");

/// Short runs, so that each bench file takes 10 to 20 s on a shared machine.
pub fn config(measurement: Duration) -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement)
        .sample_size(20)
}

/// The token's creation code with its constructor arguments, minting `supply` to the deployer.
pub fn token_creation_code(supply: U256) -> Bytes {
    let artifact: serde_json::Value = serde_json::from_str(TOKEN_ARTIFACT).unwrap();
    let mut code = hex::decode(artifact["bytecode"].as_str().unwrap()).unwrap();
    code.extend(("Bench".to_string(), "BNC".to_string(), supply).abi_encode_params());
    code.into()
}

/// Calldata of `transfer(to, 1)`.
pub fn transfer_input(to: Address) -> Bytes {
    transferCall {
        to,
        amount: U256::from(1),
    }
    .abi_encode()
    .into()
}

/// The `i`-th recipient: plain addresses no test key controls.
pub fn recipient(i: usize) -> Address {
    Address::left_padding_from(&(0x1_0000 + i as u64).to_be_bytes())
}
