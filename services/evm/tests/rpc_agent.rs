//! alloy's provider against the production chain: the JSON-RPC server over HTTP in front of an
//! agent's `AgentChain` with three shards, the broker's commit protocol and the ticket machine's
//! block clock (in one process; `services/cli/tests/ethereum.rs` runs the Node libraries against
//! separate processes).
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::time::Duration;

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, U256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_sol_types::{SolCall, SolError, SolEvent, SolValue};
use common::{IToken, in_process, token_artifact, with_args};
use parsec_evm::{ChainSettings, EvmConfig};
use support::{BASE_FEE, DEV_BALANCE, dev_signers};

const SUPPLY: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloy_deploys_transfers_and_reads_logs_through_an_agent_over_three_shards() {
    let signers = dev_signers(2);
    let (alice, bob) = (signers[0].address(), signers[1].address());
    let settings = ChainSettings {
        evm: EvmConfig::default(),
        base_fee: BASE_FEE,
        nonce_gap_timeout: Duration::from_secs(5),
        accounts: vec![alice, bob],
        ..ChainSettings::default()
    };
    let chain = in_process::chain(3, settings, &[alice, bob], U256::from(DEV_BALANCE)).await;
    let handle = parsec_evm::rpc::serve(chain, "127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(signers[0].clone()))
        .connect_http(handle.http_url().parse().unwrap());
    assert_eq!(provider.get_chain_id().await.unwrap(), 0xcbdc);
    assert_eq!(provider.get_accounts().await.unwrap(), vec![alice, bob]);

    let args = ("Parsec".to_string(), "PRS".to_string(), U256::from(SUPPLY)).abi_encode_params();
    let deploy = TransactionRequest::default()
        .with_deploy_code(with_args(&token_artifact().bytecode, &args));
    let deployed = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(deployed.status());
    let token: Address = deployed.contract_address.unwrap();
    assert_eq!(
        provider.get_code_at(token).await.unwrap(),
        token_artifact().deployed
    );

    let transfer = TransactionRequest::default()
        .with_from(alice)
        .with_to(token)
        .with_input(
            IToken::transferCall {
                to: bob,
                amount: U256::from(250),
            }
            .abi_encode(),
        );
    let estimate = provider.estimate_gas(transfer.clone()).await.unwrap();
    let receipt = provider
        .send_transaction(transfer.with_gas_limit(estimate))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    assert!(receipt.gas_used <= estimate);
    // Sealed: the block lists it, at the receipt's index, and reads back by hash.
    let block = provider
        .get_block_by_number(receipt.block_number.unwrap().into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(block.header.hash), receipt.block_hash);
    let index = receipt.transaction_index.unwrap() as usize;
    assert_eq!(
        block.transactions.hashes().nth(index),
        Some(receipt.transaction_hash)
    );
    let by_hash = provider
        .get_block_by_hash(block.header.hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_hash.header.number, block.header.number);
    assert!(provider.get_block_number().await.unwrap() >= block.header.number);

    // The balance through eth_call, and the Transfer logs by range and by block hash.
    let balance = provider
        .call(
            TransactionRequest::default()
                .with_to(token)
                .with_input(IToken::balanceOfCall { who: bob }.abi_encode()),
        )
        .await
        .unwrap();
    assert_eq!(U256::abi_decode(&balance).unwrap(), U256::from(250));
    let transfers = Filter::new()
        .address(token)
        .event_signature(IToken::Transfer::SIGNATURE_HASH)
        .from_block(0);
    let logs = provider.get_logs(&transfers).await.unwrap();
    assert_eq!(logs.len(), 2, "the mint and the transfer");
    let at_block = Filter::new()
        .at_block_hash(receipt.block_hash.unwrap())
        .address(token);
    let found = provider.get_logs(&at_block).await.unwrap();
    assert!(
        found
            .iter()
            .any(|log| log.transaction_hash == Some(receipt.transaction_hash))
    );

    // A transfer of more than bob holds: eth_call answers the custom error's data.
    let too_much = TransactionRequest::default()
        .with_from(bob)
        .with_to(token)
        .with_input(
            IToken::transferCall {
                to: alice,
                amount: U256::from(251),
            }
            .abi_encode(),
        );
    let error = provider.call(too_much).await.unwrap_err();
    let payload = error.as_error_resp().unwrap();
    assert_eq!(payload.code, 3, "{payload:?}");
    let data = payload.as_revert_data().unwrap();
    assert_eq!(
        &data[..4],
        IToken::ERC20InsufficientBalance::SELECTOR.as_slice()
    );
}
