//! The JSON-RPC server over HTTP against the fixture chain, driven by alloy's provider (a real
//! Ethereum client library) and by raw JSON for geth's shapes and error codes.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_sol_types::{SolCall, SolError, SolEvent, SolValue};
use common::{IProbe, IToken, probe_artifact, token_artifact, with_args};
use serde_json::json;
use support::{BASE_FEE, DEV_BALANCE, TestServer, dev_signers};

const SUPPLY: u128 = 1_000_000 * 1_000_000_000_000_000_000;

fn provider(server: &TestServer, signer: usize) -> impl Provider + Clone {
    let wallet = EthereumWallet::from(dev_signers(10).swap_remove(signer));
    ProviderBuilder::new()
        .wallet(wallet)
        .connect_http(server.url().parse().unwrap())
}

async fn deploy(provider: &impl Provider, code: Bytes) -> Address {
    let tx = TransactionRequest::default().with_deploy_code(code);
    let receipt = provider
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status(), "deployment failed: {receipt:?}");
    receipt.contract_address.unwrap()
}

async fn deploy_token(provider: &impl Provider) -> Address {
    let args = ("Parsec".to_string(), "PRS".to_string(), U256::from(SUPPLY)).abi_encode_params();
    deploy(provider, with_args(&token_artifact().bytecode, &args)).await
}

async fn balance_of(provider: &impl Provider, token: Address, who: Address) -> U256 {
    let input = IToken::balanceOfCall { who }.abi_encode();
    let tx = TransactionRequest::default()
        .with_to(token)
        .with_input(input);
    let output = provider.call(tx).await.unwrap();
    U256::abi_decode(&output).unwrap()
}

fn topic(address: Address) -> B256 {
    address.into_word()
}

#[tokio::test]
async fn a_token_is_deployed_transferred_and_queried_with_alloy() {
    let server = TestServer::start().await;
    let signers = dev_signers(3);
    let (alice, bob, carol) = (
        signers[0].address(),
        signers[1].address(),
        signers[2].address(),
    );
    let provider = provider(&server, 0);
    assert_eq!(provider.get_chain_id().await.unwrap(), 0xcbdc);
    assert_eq!(
        provider.get_balance(alice).await.unwrap(),
        U256::from(DEV_BALANCE)
    );

    let token = deploy_token(&provider).await;
    assert_eq!(
        provider.get_code_at(token).await.unwrap(),
        token_artifact().deployed
    );
    assert_eq!(
        balance_of(&provider, token, alice).await,
        U256::from(SUPPLY)
    );

    // Transfer with an estimated gas limit.
    let input = IToken::transferCall {
        to: bob,
        amount: U256::from(250),
    }
    .abi_encode();
    let request = TransactionRequest::default()
        .with_from(alice)
        .with_to(token)
        .with_input(input);
    let estimate = provider.estimate_gas(request.clone()).await.unwrap();
    assert!((30_000..80_000).contains(&estimate), "estimate {estimate}");
    let receipt = provider
        .send_transaction(request.with_gas_limit(estimate))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert!(receipt.status());
    assert!(receipt.gas_used <= estimate);
    // alloy prices from eth_feeHistory: the base fee plus the tip it chose.
    let sent = provider
        .get_transaction_by_hash(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    let tip = alloy_consensus::Transaction::max_priority_fee_per_gas(&sent).unwrap();
    assert_eq!(receipt.effective_gas_price, u128::from(BASE_FEE) + tip);
    assert_eq!(balance_of(&provider, token, bob).await, U256::from(250));
    assert_eq!(
        balance_of(&provider, token, alice).await,
        U256::from(SUPPLY - 250)
    );

    // The receipt's log, decoded, and its block.
    let logs = receipt.inner.logs();
    assert_eq!(logs.len(), 1);
    let event = logs[0].log_decode::<IToken::Transfer>().unwrap();
    assert_eq!((event.inner.from, event.inner.to), (alice, bob));
    assert_eq!(event.inner.value, U256::from(250));
    assert_eq!(logs[0].transaction_hash, Some(receipt.transaction_hash));
    assert_eq!(logs[0].log_index, Some(0));
    let bloom = receipt.inner.logs_bloom();
    assert!(bloom.contains_input(alloy_primitives::BloomInput::Raw(token.as_slice())));
    assert!(!bloom.contains_input(alloy_primitives::BloomInput::Raw(carol.as_slice())));
    let block = provider
        .get_block_by_number(receipt.block_number.unwrap().into())
        .full()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(block.header.hash), receipt.block_hash);
    assert_eq!(block.transactions.len(), 1);
    let tx = provider
        .get_transaction_by_hash(receipt.transaction_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tx.block_number, receipt.block_number);

    // eth_getLogs: the mint at deployment and the transfer, selected by topics.
    let transfers = Filter::new()
        .address(token)
        .event_signature(IToken::Transfer::SIGNATURE_HASH)
        .from_block(0);
    assert_eq!(provider.get_logs(&transfers).await.unwrap().len(), 2);
    let to_bob = transfers.clone().topic2(topic(bob));
    let found = provider.get_logs(&to_bob).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].block_number, receipt.block_number);
    let to_bob_or_carol = transfers.clone().topic2(vec![topic(carol), topic(bob)]);
    assert_eq!(provider.get_logs(&to_bob_or_carol).await.unwrap().len(), 1);
    let to_carol = transfers.clone().topic2(topic(carol));
    assert!(provider.get_logs(&to_carol).await.unwrap().is_empty());
    let elsewhere = Filter::new().address(carol).from_block(0);
    assert!(provider.get_logs(&elsewhere).await.unwrap().is_empty());
    let by_hash = Filter::new().at_block_hash(receipt.block_hash.unwrap());
    assert_eq!(provider.get_logs(&by_hash).await.unwrap().len(), 1);
}

#[tokio::test]
async fn reverts_answer_code_3_with_the_revert_data() {
    let server = TestServer::start().await;
    let provider = provider(&server, 0);
    let probe = deploy(&provider, probe_artifact().bytecode).await;
    let token = deploy_token(&provider).await;
    let carol = dev_signers(3)[2].address();

    // Error(string): the reason is in the message, as geth does.
    let input = IProbe::failWithReasonCall {
        reason: "no way".into(),
    }
    .abi_encode();
    let call = json!([{"to": probe, "input": Bytes::from(input)}, "latest"]);
    let reply = server.rpc("eth_call", call.clone()).await;
    assert_eq!(reply["error"]["code"], 3, "{reply}");
    assert_eq!(reply["error"]["message"], "execution reverted: no way");
    let data: Bytes = serde_json::from_value(reply["error"]["data"].clone()).unwrap();
    assert_eq!(
        alloy_sol_types::Revert::abi_decode(&data).unwrap().reason,
        "no way"
    );
    let reply = server.rpc("eth_estimateGas", call).await;
    assert_eq!(reply["error"]["code"], 3, "{reply}");

    // A custom error: no reason, the data decodes to it.
    let input = IToken::transferCall {
        to: carol,
        amount: U256::from(1),
    }
    .abi_encode();
    let request = TransactionRequest::default()
        .with_from(carol)
        .with_to(token)
        .with_input(input);
    let error = provider.call(request).await.unwrap_err();
    let payload = error.as_error_resp().unwrap();
    assert_eq!(payload.code, 3);
    assert_eq!(payload.message, "execution reverted");
    let data: Bytes = serde_json::from_str(payload.data.as_ref().unwrap().get()).unwrap();
    let decoded = IToken::ERC20InsufficientBalance::abi_decode(&data).unwrap();
    assert_eq!(decoded.sender, carol);
    assert_eq!(decoded.needed, U256::from(1));
}

#[tokio::test]
async fn json_shapes_are_geths() {
    let server = TestServer::start().await;
    assert_eq!(server.result("net_version", json!([])).await, "52188");
    assert_eq!(server.result("eth_chainId", json!([])).await, "0xcbdc");
    assert_eq!(server.result("net_listening", json!([])).await, true);
    assert_eq!(server.result("eth_syncing", json!([])).await, false);
    assert_eq!(server.result("eth_mining", json!([])).await, false);
    assert_eq!(server.result("eth_hashrate", json!([])).await, "0x0");
    let version = server.result("web3_clientVersion", json!([])).await;
    assert!(
        version.as_str().unwrap().starts_with("parsec/"),
        "{version}"
    );
    assert_eq!(
        server.result("web3_sha3", json!(["0x68656c6c6f"])).await,
        json!(keccak256(b"hello"))
    );
    assert_eq!(server.result("eth_blockNumber", json!([])).await, "0x0");
    // Base fee 1 gwei + 1 gwei tip, without leading zeros.
    assert_eq!(server.result("eth_gasPrice", json!([])).await, "0x77359400");
    assert_eq!(
        server.result("eth_maxPriorityFeePerGas", json!([])).await,
        "0x3b9aca00"
    );
    let signers = dev_signers(10);
    let accounts = server.result("eth_accounts", json!([])).await;
    assert_eq!(accounts.as_array().unwrap().len(), 10);
    assert_eq!(
        accounts[0],
        json!("0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"),
        "the Hardhat dev mnemonic's first account"
    );
    assert_eq!(
        server.result("eth_coinbase", json!([])).await,
        json!(support::config().fee_recipient)
    );
    let alice = signers[0].address();
    assert_eq!(
        server
            .result("eth_getBalance", json!([alice, "latest"]))
            .await,
        json!(format!("{:#x}", DEV_BALANCE))
    );
    assert_eq!(
        server
            .result("eth_getTransactionCount", json!([alice, "pending"]))
            .await,
        "0x0"
    );
    assert_eq!(
        server.result("eth_getCode", json!([alice, "latest"])).await,
        "0x"
    );
    assert_eq!(
        server
            .result("eth_getStorageAt", json!([alice, "0x0", "latest"]))
            .await,
        json!(B256::ZERO)
    );

    // A transfer, then the block holding it.
    let provider = provider(&server, 0);
    let bob = signers[1].address();
    let receipt = provider
        .send_transaction(
            TransactionRequest::default()
                .with_to(bob)
                .with_value(U256::from(5)),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let hash = receipt.transaction_hash;
    let sent = server
        .result("eth_getTransactionByHash", json!([hash]))
        .await;
    let tip = u128::from_str_radix(
        sent["maxPriorityFeePerGas"]
            .as_str()
            .unwrap()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    let price = json!(format!("{:#x}", u128::from(BASE_FEE) + tip));
    let tip = json!(format!("{tip:#x}"));
    let receipt = server
        .result("eth_getTransactionReceipt", json!([hash]))
        .await;
    for (field, value) in [
        ("status", json!("0x1")),
        ("type", json!("0x2")),
        ("gasUsed", json!("0x5208")),
        ("cumulativeGasUsed", json!("0x5208")),
        ("transactionIndex", json!("0x0")),
        ("blockNumber", json!("0x1")),
        ("effectiveGasPrice", price),
        ("contractAddress", json!(null)),
        ("logs", json!([])),
        ("from", json!(alice)),
        ("to", json!(bob)),
    ] {
        assert_eq!(receipt[field], value, "receipt field {field}: {receipt}");
    }
    assert_eq!(receipt["logsBloom"], json!(alloy_primitives::Bloom::ZERO));
    let block = server
        .result("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    assert_eq!(block["number"], "0x1");
    assert_eq!(block["hash"], receipt["blockHash"]);
    assert_eq!(block["transactions"], json!([hash]));
    assert_eq!(block["difficulty"], "0x0");
    assert_eq!(block["baseFeePerGas"], "0x3b9aca00");
    assert_eq!(block["gasUsed"], "0x5208");
    assert_eq!(block["miner"], json!(support::config().fee_recipient));
    assert_eq!(block["withdrawals"], json!([]));
    assert_eq!(
        block["sha3Uncles"],
        "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
    );
    let full = server
        .result("eth_getBlockByHash", json!([block["hash"], true]))
        .await;
    assert_eq!(full["transactions"][0]["hash"], json!(hash));
    assert_eq!(full["transactions"][0]["value"], "0x5");
    let earliest = server
        .result("eth_getBlockByNumber", json!(["earliest", false]))
        .await;
    assert_eq!(earliest["number"], "0x0");
    assert_eq!(block["parentHash"], earliest["hash"]);
    for (method, params) in [
        ("eth_getBlockByNumber", json!(["0x99", false])),
        ("eth_getBlockByHash", json!([B256::repeat_byte(9), false])),
        ("eth_getTransactionReceipt", json!([B256::repeat_byte(9)])),
        ("eth_getTransactionByHash", json!([B256::repeat_byte(9)])),
        (
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["latest", "0x5"]),
        ),
    ] {
        assert_eq!(server.result(method, params).await, json!(null), "{method}");
    }
    assert_eq!(
        server
            .result("eth_getBlockTransactionCountByNumber", json!(["0x1"]))
            .await,
        "0x1"
    );
    let by_index = server
        .result(
            "eth_getTransactionByBlockHashAndIndex",
            json!([block["hash"], "0x0"]),
        )
        .await;
    assert_eq!(by_index["hash"], json!(hash));
    let history = server
        .result("eth_feeHistory", json!(["0x2", "latest", [50.0]]))
        .await;
    assert_eq!(history["oldestBlock"], "0x0");
    assert_eq!(
        history["baseFeePerGas"],
        json!(["0x3b9aca00", "0x3b9aca00", "0x3b9aca00"])
    );
    assert_eq!(history["gasUsedRatio"].as_array().unwrap().len(), 2);
    assert_eq!(history["reward"], json!([["0x0"], [tip]]));
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let server = TestServer::start().await;
    let provider = provider(&server, 0);
    let alice = dev_signers(1)[0].address();

    let reply = server.rpc("eth_noSuchMethod", json!([])).await;
    assert_eq!(reply["error"]["code"], -32601, "{reply}");
    let reply = server.post("{not json").await;
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    let reply = server
        .rpc("eth_getBalance", json!(["0x1234", "latest"]))
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let reply = server.rpc("eth_getBalance", json!([])).await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let reply = server
        .rpc("eth_getLogs", json!([{"topics": ["0x1", null]}]))
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    // The reason is in the message, as geth puts it.
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("invalid argument"), "{reply}");
    assert!(message.contains("invalid topic"), "{reply}");
    let reply = server
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x1", "blockHash": B256::ZERO}]),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    let reply = server
        .rpc(
            "eth_call",
            json!([{"to": alice, "input": "0x01", "data": "0x02"}]),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");

    let reply = server
        .rpc("eth_getBalance", json!([alice, "0xffffffffffffffff"]))
        .await;
    assert_eq!(reply["error"]["message"], "header not found", "{reply}");
    let reply = server
        .rpc(
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["latest", "0xffffffffffffffff"]),
        )
        .await;
    assert_eq!(reply["result"], json!(null), "{reply}");
    let reply = server
        .rpc(
            "eth_feeHistory",
            json!(["0xffffffffffffffff", "0xffffffffffffffff", []]),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    let reply = server
        .rpc("eth_feeHistory", json!([4, "latest", [90.0, 10.0]]))
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");

    // Submission errors in geth's words.
    let reply = server
        .rpc("eth_sendRawTransaction", json!(["0x02c180"]))
        .await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rlp")
    );
    let reply = server.rpc("eth_sendRawTransaction", json!(["0x"])).await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    let bob = dev_signers(2)[1].address();
    let sent = provider
        .send_transaction(
            TransactionRequest::default()
                .with_to(bob)
                .with_value(U256::from(1)),
        )
        .await
        .unwrap();
    sent.get_receipt().await.unwrap();
    let stale = TransactionRequest::default()
        .with_to(bob)
        .with_value(U256::from(1))
        .with_nonce(0);
    let error = provider.send_transaction(stale).await.unwrap_err();
    let payload = error.as_error_resp().unwrap();
    assert_eq!(payload.code, -32000);
    assert!(
        payload.message.starts_with("nonce too low"),
        "{}",
        payload.message
    );
    let too_much = TransactionRequest::default()
        .with_to(bob)
        .with_value(U256::from(DEV_BALANCE) * U256::from(2))
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(2 * u128::from(BASE_FEE))
        .with_max_priority_fee_per_gas(1);
    let error = provider.send_transaction(too_much).await.unwrap_err();
    let message = error.as_error_resp().map(|p| p.message.to_string());
    assert!(
        message
            .as_deref()
            .unwrap_or_default()
            .starts_with("insufficient funds"),
        "{error}"
    );

    // No historical state.
    server.chain.seal().await;
    server.chain.seal().await;
    let reply = server.rpc("eth_getBalance", json!([alice, "0x0"])).await;
    assert_eq!(reply["error"]["code"], -32000, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("historical state is not available"),
        "{reply}"
    );
    let reply = server.rpc("eth_call", json!([{"to": alice}, "0x0"])).await;
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("historical")
    );
    let reply = server
        .rpc("eth_call", json!([{"to": alice}, "pending"]))
        .await;
    assert_eq!(reply["result"], "0x", "{reply}");
}

/// Regression (json_rpc fuzz target): over HTTP jsonrpsee answered subscriptions with
/// "Internal error" (-32603), an error clients read as a server fault.
#[tokio::test]
async fn subscriptions_over_http_are_refused_as_geth_refuses_them() {
    let server = TestServer::start().await;
    for (method, params) in [
        ("eth_subscribe", json!(["newHeads"])),
        (
            "eth_unsubscribe",
            json!(["0x0123456789abcdef0123456789abcdef"]),
        ),
    ] {
        let reply = server.rpc(method, params).await;
        assert_eq!(reply["error"]["code"], -32601, "{method}: {reply}");
        assert_eq!(
            reply["error"]["message"], "notifications not supported",
            "{method}: {reply}"
        );
    }
}

#[tokio::test]
async fn batches_are_answered_call_by_call() {
    let server = TestServer::start().await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": "two", "method": "eth_nope", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "net_version"},
    ]);
    let reply = server.post(&batch.to_string()).await;
    let replies = reply.as_array().unwrap();
    assert_eq!(replies.len(), 3);
    let by_id = |id: serde_json::Value| {
        replies
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no reply with id {id}"))
    };
    assert_eq!(by_id(json!(1))["result"], "0xcbdc");
    assert_eq!(by_id(json!("two"))["error"]["code"], -32601);
    assert_eq!(by_id(json!(3))["result"], "52188");
}

#[tokio::test]
async fn batched_transactions_run_concurrently_so_nonce_order_does_not_matter() {
    let server = TestServer::start().await;
    let signer = dev_signers(1).swap_remove(0);
    let mut wallet = common::Wallet { signer, nonce: 0 };
    let bob = dev_signers(2)[1].address();
    let send = |wallet: &mut common::Wallet| {
        wallet.eip1559(
            alloy_primitives::TxKind::Call(bob),
            U256::from(1),
            Bytes::new(),
            21_000,
            common::Fee::default(),
        )
    };
    let first = send(&mut wallet);
    let second = send(&mut wallet);
    // Nonce 1 before nonce 0: run one after the other, the first would wait for a
    // predecessor queued behind it.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [second]},
        {"jsonrpc": "2.0", "id": 0, "method": "eth_sendRawTransaction", "params": [first]},
    ]);
    let reply = server.post(&batch.to_string()).await;
    let replies = reply.as_array().unwrap();
    assert_eq!(replies.len(), 2, "{reply}");
    for reply in replies {
        assert!(reply["result"].is_string(), "{reply}");
    }
    assert_eq!(
        server
            .result(
                "eth_getTransactionCount",
                json!([wallet.address(), "latest"])
            )
            .await,
        "0x2"
    );
}

#[tokio::test]
async fn cors_and_request_size_limits_apply() {
    let options = parsec_evm::rpc::RpcOptions {
        max_request_body_size: 1024,
        ..Default::default()
    };
    let server = TestServer::with_chain(support::FixtureChain::new(), options).await;
    let client = reqwest::Client::new();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url())
        .header("origin", "https://dapp.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "*",
        "{:?}",
        preflight.headers()
    );
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "web3_sha3", "params": [format!("0x{}", "00".repeat(2048))]});
    let reply = client
        .post(server.url())
        .header("content-type", "application/json")
        .body(big.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn log_queries_are_capped() {
    let options = parsec_evm::rpc::RpcOptions {
        max_logs_block_range: 2,
        ..Default::default()
    };
    let server = TestServer::with_chain(support::FixtureChain::new(), options).await;
    for _ in 0..3 {
        server.chain.seal().await;
    }
    let reply = server
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest"}]),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32005, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("block range too large")
    );
    let reply = server
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x2", "toBlock": "0x3"}]),
        )
        .await;
    assert_eq!(reply["result"], json!([]), "{reply}");
    let reply = server
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x3", "toBlock": "0x2"}]),
        )
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
}

#[tokio::test]
async fn filters_report_changes_since_the_last_poll() {
    let server = TestServer::start().await;
    let provider = provider(&server, 0);
    let token = deploy_token(&provider).await;
    let bob = dev_signers(2)[1].address();

    let blocks = server.result("eth_newBlockFilter", json!([])).await;
    let transfers = server
        .result(
            "eth_newFilter",
            json!([{"address": token, "topics": [IToken::Transfer::SIGNATURE_HASH]}]),
        )
        .await;
    let pending = server
        .result("eth_newPendingTransactionFilter", json!([]))
        .await;
    assert_ne!(blocks, transfers);
    assert_eq!(
        server.result("eth_getFilterChanges", json!([blocks])).await,
        json!([])
    );

    let input = IToken::transferCall {
        to: bob,
        amount: U256::from(7),
    }
    .abi_encode();
    let receipt = provider
        .send_transaction(
            TransactionRequest::default()
                .with_to(token)
                .with_input(input),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let sealed = server.chain.seal().await;

    let hashes = server.result("eth_getFilterChanges", json!([blocks])).await;
    assert_eq!(hashes, json!([receipt.block_hash.unwrap(), sealed.hash]));
    assert_eq!(
        server.result("eth_getFilterChanges", json!([blocks])).await,
        json!([]),
        "already reported"
    );
    let logs = server
        .result("eth_getFilterChanges", json!([transfers]))
        .await;
    assert_eq!(
        logs.as_array().unwrap().len(),
        1,
        "the transfer, not the mint: {logs}"
    );
    assert_eq!(logs[0]["transactionHash"], json!(receipt.transaction_hash));
    assert_eq!(
        server
            .result("eth_getFilterChanges", json!([transfers]))
            .await,
        json!([])
    );
    // getFilterLogs answers the whole filter again (latest block only: no fromBlock).
    let all = server.result("eth_getFilterLogs", json!([transfers])).await;
    assert_eq!(all, json!([]), "the head block holds no transfer");
    assert_eq!(
        server
            .result("eth_getFilterChanges", json!([pending]))
            .await,
        json!([])
    );

    assert_eq!(
        server.result("eth_uninstallFilter", json!([blocks])).await,
        true
    );
    assert_eq!(
        server.result("eth_uninstallFilter", json!([blocks])).await,
        false
    );
    let reply = server.rpc("eth_getFilterChanges", json!([blocks])).await;
    assert_eq!(reply["error"]["message"], "filter not found", "{reply}");
}

#[tokio::test]
async fn a_stopped_server_refuses_connections() {
    let server = TestServer::start().await;
    assert_eq!(server.result("eth_chainId", json!([])).await, "0xcbdc");
    let url = server.url();
    server.handle.clone().stop().await;
    let refused = reqwest::Client::new().post(url).body("{}").send().await;
    assert!(refused.is_err(), "{refused:?}");
}
