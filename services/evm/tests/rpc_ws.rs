//! Subscriptions over WebSocket (same port as HTTP): `newHeads` and `logs` with a filter,
//! through alloy's WebSocket provider, and `eth_unsubscribe`.
#![allow(clippy::unwrap_used)]

mod common;
mod support;

use std::time::Duration;

use alloy_network::{EthereumWallet, TransactionBuilder};
use alloy_primitives::{U256, keccak256};
use alloy_provider::{Provider, ProviderBuilder, WsConnect};
use alloy_rpc_types_eth::{Filter, TransactionRequest};
use alloy_sol_types::{SolCall, SolEvent, SolValue};
use common::{IToken, token_artifact, with_args};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use support::{TestServer, dev_signers};
use tokio_tungstenite::tungstenite::Message;

/// Bound on waiting for a notification that must come (the block is already sealed).
const NOTIFICATION: Duration = Duration::from_secs(10);

#[tokio::test]
async fn new_heads_and_filtered_logs_arrive_over_websocket() {
    let server = TestServer::start().await;
    let signers = dev_signers(2);
    let bob = signers[1].address();
    let wallet = EthereumWallet::from(signers[0].clone());
    let provider = ProviderBuilder::new()
        .wallet(wallet)
        .connect_ws(WsConnect::new(server.handle.ws_url()))
        .await
        .unwrap();

    let mut heads = provider.subscribe_blocks().await.unwrap();
    let args = (
        "Parsec".to_string(),
        "PRS".to_string(),
        U256::from(1_000u64),
    )
        .abi_encode_params();
    let deploy = TransactionRequest::default()
        .with_deploy_code(with_args(&token_artifact().bytecode, &args));
    let deployed = provider
        .send_transaction(deploy)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let token = deployed.contract_address.unwrap();
    let head = tokio::time::timeout(NOTIFICATION, heads.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Some(head.number), deployed.block_number);
    assert_eq!(Some(head.hash), deployed.block_hash);

    // Logs of this token's transfers to bob only.
    let filter = Filter::new()
        .address(token)
        .event_signature(IToken::Transfer::SIGNATURE_HASH)
        .topic2(bob.into_word());
    let mut logs = provider.subscribe_logs(&filter).await.unwrap();
    let carol = keccak256(b"carol");
    let carol = alloy_primitives::Address::from_word(carol);
    for (to, amount) in [(carol, 1u64), (bob, 2), (carol, 3), (bob, 4)] {
        let input = IToken::transferCall {
            to,
            amount: U256::from(amount),
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
    }
    let mut amounts = Vec::new();
    for _ in 0..2 {
        let log = tokio::time::timeout(NOTIFICATION, logs.recv())
            .await
            .unwrap()
            .unwrap();
        let event = log.log_decode::<IToken::Transfer>().unwrap();
        assert_eq!(event.inner.to, bob);
        amounts.push(event.inner.value);
    }
    assert_eq!(amounts, vec![U256::from(2), U256::from(4)]);

    // Every sealed block came through newHeads, in order, empty ones too.
    server.chain.seal().await;
    let mut numbers = Vec::new();
    while numbers.last() != Some(&6) {
        let head = tokio::time::timeout(NOTIFICATION, heads.recv())
            .await
            .unwrap()
            .unwrap();
        numbers.push(head.number);
    }
    assert_eq!(numbers, vec![2, 3, 4, 5, 6]);
}

/// A raw WebSocket JSON-RPC session, to see the wire format alloy hides (subscription ids).
struct RawWs {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl RawWs {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self { socket }
    }

    async fn send(&mut self, request: serde_json::Value) {
        let text = request.to_string();
        self.socket.send(Message::text(text)).await.unwrap();
    }

    async fn receive(&mut self) -> serde_json::Value {
        loop {
            let message = tokio::time::timeout(NOTIFICATION, self.socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn call(
        &mut self,
        id: u64,
        method: &str,
        params: serde_json::Value,
    ) -> serde_json::Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.receive().await
    }
}

#[tokio::test]
async fn subscriptions_use_geths_wire_format_and_end_on_unsubscribe() {
    let server = TestServer::start().await;
    let mut ws = RawWs::connect(&server.handle.ws_url()).await;

    let reply = ws
        .call(1, "eth_subscribe", json!(["newPendingTransactions"]))
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unsupported subscription"),
        "{reply}"
    );
    let reply = ws
        .call(2, "eth_subscribe", json!(["logs", {"topics": "nope"}]))
        .await;
    assert_eq!(reply["error"]["code"], -32602, "{reply}");

    let reply = ws.call(3, "eth_subscribe", json!(["newHeads"])).await;
    let id = reply["result"].as_str().unwrap().to_string();
    assert!(
        id.starts_with("0x") && id.len() == 34,
        "geth-style id: {reply}"
    );
    let sealed = server.chain.seal().await;
    let note = ws.receive().await;
    assert_eq!(note["method"], "eth_subscription", "{note}");
    assert_eq!(note["params"]["subscription"], id.as_str());
    assert_eq!(note["params"]["result"]["number"], "0x1");
    assert_eq!(note["params"]["result"]["hash"], json!(sealed.hash));
    assert!(
        note["params"]["result"].get("transactions").is_none(),
        "a header"
    );

    let reply = ws.call(4, "eth_unsubscribe", json!([id])).await;
    assert_eq!(reply["result"], true, "{reply}");
    // Nothing more for it: the next message is the answer to the next call.
    server.chain.seal().await;
    let reply = ws.call(5, "eth_unsubscribe", json!([id])).await;
    assert_eq!(reply["id"], 5, "{reply}");
    assert_eq!(reply["result"], false, "{reply}");
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_still_gets_every_head_in_order() {
    let server = TestServer::start().await;
    let mut ws = RawWs::connect(&server.handle.ws_url()).await;
    let reply = ws.call(1, "eth_subscribe", json!(["newHeads"])).await;
    assert!(reply["result"].is_string(), "{reply}");
    // More blocks than the fixture's broadcast holds (64), sealed without waiting for the
    // subscriber: it lags and fills the gap from the chain.
    const BLOCKS: u64 = 200;
    for _ in 0..BLOCKS {
        server.chain.seal().await;
    }
    for expected in 1..=BLOCKS {
        let note = ws.receive().await;
        assert_eq!(
            note["params"]["result"]["number"],
            format!("{expected:#x}"),
            "{note}"
        );
    }
}
