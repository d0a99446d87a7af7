//! Every limit of the JSON-RPC server, each refused with a clear error and nothing else
//! disturbed: batch length, per-client call rate (batches count per call), connections per
//! client and in all, installed filters, subscriptions per connection, log results, the gas of
//! `eth_call` / `eth_estimateGas`, and metric labels that clients cannot multiply.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::U256;
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_sol_types::{SolCall, SolValue};
use common::{IProbe, IToken, probe_artifact, token_artifact, with_args};
use futures::{SinkExt, StreamExt};
use parsec_evm::rpc::{RateLimit, RpcOptions};
use serde_json::json;
use support::{FixtureChain, TestServer, dev_signers};

const WAIT: Duration = Duration::from_secs(30);

async fn server(options: RpcOptions) -> TestServer {
    TestServer::with_chain(FixtureChain::new(), options).await
}

fn call(id: u64, method: &str) -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": []})
}

#[tokio::test]
async fn batches_longer_than_the_limit_are_refused_whole() {
    let server = server(RpcOptions {
        max_batch_len: 3,
        ..Default::default()
    })
    .await;
    let ok = server
        .post(&json!([call(1, "eth_chainId"), call(2, "eth_blockNumber")]).to_string())
        .await;
    assert_eq!(ok.as_array().unwrap().len(), 2, "{ok}");
    let batch: Vec<_> = (0..4).map(|i| call(i, "eth_chainId")).collect();
    let refused = server.post(&json!(batch).to_string()).await;
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch request was too large"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_client_over_its_rate_is_refused_per_call_with_32005() {
    let server = server(RpcOptions {
        rate_limit: Some(RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(4).unwrap(),
        }),
        ..Default::default()
    })
    .await;
    // The burst: every call answered.
    for _ in 0..4 {
        let reply = server.rpc("eth_chainId", json!([])).await;
        assert_eq!(reply["result"], "0xcbdc", "{reply}");
    }
    let refused = server.rpc("eth_chainId", json!([])).await;
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rate limit exceeded") && message.contains("127.0.0.1"),
        "{message}"
    );
    // Each call of a batch counts: a batch gets answers for what the rate allows, refusals for
    // the rest, in one reply.
    let batch: Vec<_> = (0..3).map(|i| call(i, "eth_chainId")).collect();
    let replies = server.post(&json!(batch).to_string()).await;
    let replies = replies.as_array().unwrap();
    assert_eq!(replies.len(), 3);
    let refused = replies
        .iter()
        .filter(|r| r["error"]["code"] == -32005)
        .count();
    assert!(refused >= 2, "at most one token came back: {replies:?}");
}

/// Whether the server answers an HTTP request on a fresh connection.
fn answers(address: std::net::SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let body = call(1, "eth_chainId").to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.contains("0xcbdc")
}

/// A connection the server accepted and then closed without a word.
fn closed_at_once(address: std::net::SocketAddr) -> bool {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    // EOF or a reset: closed. A timeout would mean it was kept open.
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

/// Polls until the server answers a new connection (a closed connection frees its slot once
/// the server has seen it close).
fn answers_again(address: std::net::SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while !answers(address) {
        assert!(Instant::now() < deadline, "the freed slot was never reused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_bounded_per_client_and_in_all() {
    let per_client = server(RpcOptions {
        max_connections_per_client: Some(2),
        ..Default::default()
    })
    .await;
    let address = per_client.handle.local_addr();
    tokio::task::spawn_blocking(move || {
        let idle: Vec<_> = (0..2)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        assert!(
            closed_at_once(address),
            "a third connection must be refused"
        );
        drop(idle);
        answers_again(address);
    })
    .await
    .unwrap();

    let total = server(RpcOptions {
        max_open_connections: 3,
        ..Default::default()
    })
    .await;
    let address = total.handle.local_addr();
    tokio::task::spawn_blocking(move || {
        let idle: Vec<_> = (0..3)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        assert!(
            closed_at_once(address),
            "a fourth connection must be refused"
        );
        drop(idle);
        answers_again(address);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn installed_filters_are_capped() {
    let server = server(RpcOptions {
        max_filters: 2,
        ..Default::default()
    })
    .await;
    server.result("eth_newBlockFilter", json!([])).await;
    server.result("eth_newFilter", json!([{}])).await;
    let refused = server.rpc("eth_newBlockFilter", json!([])).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many filters"), "{refused}");
}

#[tokio::test]
async fn subscriptions_per_connection_are_capped() {
    let server = server(RpcOptions {
        max_subscriptions_per_connection: 2,
        ..Default::default()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.handle.ws_url())
        .await
        .unwrap();
    let mut replies = Vec::new();
    for id in 0..3 {
        let request =
            json!({"jsonrpc": "2.0", "id": id, "method": "eth_subscribe", "params": ["newHeads"]});
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            request.to_string(),
        ))
        .await
        .unwrap();
        // Replies to the subscription requests (no block is sealed, so no notification).
        let reply = ws.next().await.unwrap().unwrap();
        replies.push(serde_json::from_str::<serde_json::Value>(reply.to_text().unwrap()).unwrap());
    }
    assert!(replies[0]["result"].is_string(), "{replies:?}");
    assert!(replies[1]["result"].is_string(), "{replies:?}");
    assert!(
        replies[2]["error"].is_object(),
        "the third is refused: {replies:?}"
    );
}

#[tokio::test]
async fn log_results_are_capped() {
    let server = server(RpcOptions {
        max_logs: 1,
        ..Default::default()
    })
    .await;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(dev_signers(1).swap_remove(0)))
        .connect_http(server.url().parse().unwrap());
    let supply = U256::from(1_000u64);
    let code = with_args(
        &token_artifact().bytecode,
        &("T".to_string(), "T".to_string(), supply).abi_encode_params(),
    );
    let deployed = provider
        .send_transaction(TransactionRequest::default().with_deploy_code(code))
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let token = deployed.contract_address.unwrap();
    let input = IToken::transferCall {
        to: dev_signers(2)[1].address(),
        amount: U256::from(1),
    }
    .abi_encode();
    provider
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
    // Two Transfer logs (mint, transfer) where one is allowed.
    let refused = server
        .rpc(
            "eth_getLogs",
            json!([{"fromBlock": "0x0", "toBlock": "latest", "address": token}]),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32005, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 1 results"),
        "{refused}"
    );
}

#[tokio::test]
async fn calls_get_at_most_the_gas_cap_whatever_they_ask() {
    let server = TestServer::start().await;
    let provider = ProviderBuilder::new()
        .wallet(EthereumWallet::from(dev_signers(1).swap_remove(0)))
        .connect_http(server.url().parse().unwrap());
    let deployed = provider
        .send_transaction(
            TransactionRequest::default().with_deploy_code(probe_artifact().bytecode.clone()),
        )
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let probe = deployed.contract_address.unwrap();
    // A million fresh storage slots: far more gas than any block holds.
    let input = IProbe::burnCall {
        n: U256::from(1_000_000),
    }
    .abi_encode();
    let request = json!({"to": probe, "data": format!("0x{}", alloy_primitives::hex::encode(&input)), "gas": "0xffffffffffffffff"});
    let started = Instant::now();
    let call = server.rpc("eth_call", json!([request, "latest"])).await;
    let estimate = server.rpc("eth_estimateGas", json!([request])).await;
    eprintln!(
        "capped eth_call and eth_estimateGas answered in {:?}",
        started.elapsed()
    );
    for (what, reply) in [("eth_call", &call), ("eth_estimateGas", &estimate)] {
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("out of gas") || message.contains("gas required exceeds"),
            "{what}: {reply}"
        );
    }
}

#[tokio::test]
async fn unknown_method_names_do_not_become_metric_labels() {
    let server = TestServer::start().await;
    for i in 0..3 {
        let method = format!("zz_garbage{i}");
        let reply = server.rpc(&method, json!([])).await;
        assert_eq!(reply["error"]["code"], -32601, "{reply}");
    }
    server.result("eth_chainId", json!([])).await;
    let metrics = parsec_telemetry::render();
    assert!(
        !metrics.contains("zz_garbage"),
        "client names leaked into metrics"
    );
    assert!(metrics.contains("method=\"unknown\""), "{metrics}");
    assert!(metrics.contains("method=\"eth_chainId\""));
}
