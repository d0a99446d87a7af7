//! Ethereum JSON-RPC request handling: request text, single or batched, through the server's
//! whole in-process request path ([`InProcessRpc`]: the same limits, CORS and JSON-RPC
//! middleware, batching and methods as `parsec dev`'s port 8545) over a real agent chain on the
//! in-process cluster, with the development accounts funded.
//!
//! Two modes, by the first byte:
//! - anything but `0x00`: the bytes are the HTTP body (the corpus holds a real request for
//!   every method the server implements, and batches);
//! - `0x00`: the rest describes requests (method from the server's list or any name, id, params
//!   built from typed atoms: addresses, block tags, quantities, hashes of real blocks and
//!   transactions, call objects, filters, ids of installed filters, and transactions signed on
//!   the spot with the sender's current nonce, so that state keeps changing), sent alone or as
//!   a batch.
//!
//! Oracles: an answer within a deadline; HTTP 200 (400 with a parse error for a body that does
//! not start like a JSON object or array, as jsonrpsee reads bodies); a body that is valid JSON-RPC 2.0 — one
//! response object, or for a batch one per request that has an id — each with the request's
//! id and exactly one of `result` and `error` (`code` an integer, `message` a string); an empty
//! (or `null`) body only for notifications; no internal error (-32603, which the server keeps for backend
//! failures, and this backend is healthy); invalid-params errors carry their reason in the
//! message (the middleware's job), never jsonrpsee's bare "Invalid params".
//!
//! Differences from `parsec dev`, for speed: a future nonce waits 200 ms for its predecessors
//! (not 10 s), and `eth_call`/`eth_estimateGas` get at most 3,000,000 gas.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use alloy_consensus::{TxEip1559, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, hex};
use parsec_core::Settings;
use parsec_evm::chain::Chain;
use parsec_evm::rpc::{InProcessRpc, RpcOptions};
use parsec_evm::{AgentChain, ChainSettings, EvmConfig};
use serde_json::{Map, Value, json};

use crate::cluster::{self, Cluster};
use crate::seeds::{DEV_ACCOUNTS, GWEI, dev_signer, probe_creation_code, signed_transactions};
use crate::tx_decode::signed;
use crate::wire::{Reader, Writer};

/// The first byte that selects the structured mode.
pub const STRUCTURED: u8 = 0x00;
/// No request may take longer to answer (sanitizers slow revm down tenfold).
const DEADLINE: Duration = Duration::from_secs(30);
const INTERNAL_ERROR: i64 = -32603;
const INVALID_PARAMS: i64 = -32602;

/// Every method the server implements (services/evm/src/rpc/api.rs; a test keeps the two in
/// step).
pub const METHODS: [&str; 42] = [
    "web3_clientVersion",
    "web3_sha3",
    "net_version",
    "net_listening",
    "net_peerCount",
    "eth_chainId",
    "eth_syncing",
    "eth_mining",
    "eth_hashrate",
    "eth_coinbase",
    "eth_accounts",
    "eth_blockNumber",
    "eth_gasPrice",
    "eth_maxPriorityFeePerGas",
    "eth_feeHistory",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getBlockTransactionCountByNumber",
    "eth_getBlockTransactionCountByHash",
    "eth_getUncleCountByBlockNumber",
    "eth_getUncleCountByBlockHash",
    "eth_getBlockReceipts",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_call",
    "eth_estimateGas",
    "eth_sendRawTransaction",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getTransactionByBlockNumberAndIndex",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getLogs",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_newPendingTransactionFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
    "eth_subscribe",
    "eth_unsubscribe",
];

struct Node {
    _cluster: Cluster,
    chain: Arc<AgentChain>,
    rpc: InProcessRpc,
    /// Ids the server returned for installed filters, for later requests to name.
    filters: Mutex<Vec<String>>,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| crate::runtime().block_on(start()))
}

/// `parsec dev --in-memory`'s agent chain, served in process.
async fn start() -> Node {
    let settings = Settings::default();
    let cluster = Cluster::start(settings.clone(), true).await;
    let chain_settings = ChainSettings {
        evm: EvmConfig {
            call_gas_cap: 3_000_000,
            ..EvmConfig::default()
        },
        nonce_gap_timeout: Duration::from_millis(200),
        accounts: DEV_ACCOUNTS.to_vec(),
        ..ChainSettings::default()
    };
    let agent_id = u64::from(cluster::AGENT.0);
    let chain = AgentChain::start(
        cluster.agent.clone(),
        agent_id,
        Arc::new(cluster.ticket_machine.clone()),
        cluster::lease(&settings),
        chain_settings,
    );
    chain
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("the block clock starts");
    let ether = U256::from(10u64).pow(U256::from(18u64));
    chain
        .fund(&DEV_ACCOUNTS, U256::from(10_000u64) * ether)
        .await
        .expect("funding the development accounts");
    let options = RpcOptions {
        priority_fee: 0,
        ..RpcOptions::default()
    };
    let rpc = InProcessRpc::new(chain.clone(), options).expect("the RPC module builds");
    Node {
        _cluster: cluster,
        chain,
        rpc,
        filters: Mutex::new(Vec::new()),
    }
}

pub fn run(data: &[u8]) {
    let node = node();
    crate::runtime().block_on(async {
        let body = match data.split_first() {
            Some((&STRUCTURED, rest)) => {
                serde_json::to_vec(&Generator::new(node, rest).requests().await)
                    .expect("JSON serialises")
            }
            _ => data.to_vec(),
        };
        let answer = tokio::time::timeout(DEADLINE, node.rpc.post(body.clone()))
            .await
            .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?}"))
            .expect("the in-process service answers");
        let (status, text) = answer;
        match status {
            http::StatusCode::OK => check_answer(&body, &text),
            // jsonrpsee refuses a body that does not start (within 128 bytes, after white
            // space) like an object or an array with 400 and a parse error.
            http::StatusCode::BAD_REQUEST => {
                let first = body.iter().take(128).find(|b| !b.is_ascii_whitespace());
                assert!(
                    !matches!(first, Some(b'{' | b'[')),
                    "400 for a call: {text}"
                );
                let answer: Value = serde_json::from_str(&text).expect("a JSON error");
                assert_eq!(answer["error"]["code"], json!(-32700), "{text}");
            }
            _ => panic!("HTTP {status}: {text}"),
        }
        remember_filters(node, &body, &text);
    });
}

/// The body is valid JSON-RPC 2.0 for `request`.
fn check_answer(request: &[u8], text: &str) {
    let request: Option<Value> = serde_json::from_slice(request).ok();
    // jsonrpsee's HTTP transport acknowledges notifications with `null` (its comment says an
    // empty body, which is what geth sends).
    if text.is_empty() || text == "null" {
        let notification = |v: &Value| v.as_object().is_some_and(|o| !o.contains_key("id"));
        let only_notifications = match &request {
            Some(Value::Object(_)) => request.as_ref().is_some_and(notification),
            Some(Value::Array(items)) => !items.is_empty() && items.iter().all(notification),
            _ => false,
        };
        assert!(
            only_notifications,
            "an empty answer to a request that has an id"
        );
        return;
    }
    let answer: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {text}"));
    match (&request, &answer) {
        (Some(Value::Array(items)), Value::Array(responses)) => {
            // Every call with an id gets its response; a call without one gets none if it is a
            // valid notification, an error if it is not a valid request at all.
            let with_id: Vec<&Value> = items.iter().filter_map(|v| v.get("id")).collect();
            assert!(
                responses.len() >= with_id.len() && responses.len() <= items.len(),
                "{} responses to {} calls ({} with an id): {text}",
                responses.len(),
                items.len(),
                with_id.len()
            );
            for id in with_id.iter().filter(|id| id.is_number() || id.is_string()) {
                assert!(
                    responses.iter().any(|r| r.get("id") == Some(id)),
                    "no response for id {id}: {text}"
                );
            }
            for response in responses {
                check_response(response, None);
            }
        }
        (_, Value::Array(responses)) => panic!("a batch answer to a single request: {responses:?}"),
        (Some(Value::Object(call)), response) => check_response(response, call.get("id")),
        (_, response) => check_response(response, None),
    }
}

fn check_response(response: &Value, id: Option<&Value>) {
    let object = response
        .as_object()
        .unwrap_or_else(|| panic!("a response that is not an object: {response}"));
    assert_eq!(object.get("jsonrpc"), Some(&json!("2.0")), "{response}");
    let got_id = object
        .get("id")
        .unwrap_or_else(|| panic!("a response without id: {response}"));
    if let Some(id) = id.filter(|id| id.is_number() || id.is_string()) {
        assert_eq!(got_id, id, "the response's id is not the request's");
    }
    match (object.get("result"), object.get("error")) {
        (Some(_), None) => {}
        (None, Some(error)) => {
            let code = error.get("code").and_then(Value::as_i64);
            let message = error.get("message").and_then(Value::as_str);
            let (Some(code), Some(message)) = (code, message) else {
                panic!("a malformed error object: {response}");
            };
            assert_ne!(code, INTERNAL_ERROR, "an internal error: {message}");
            if code == INVALID_PARAMS {
                assert_ne!(
                    message, "Invalid params",
                    "an unexplained invalid-params error"
                );
            }
        }
        _ => panic!("a response needs exactly one of result and error: {response}"),
    }
}

/// Keeps the ids of filters the server installed, so that generated requests can name them.
fn remember_filters(node: &Node, request: &[u8], text: &str) {
    if !String::from_utf8_lossy(request).contains("Filter\"") {
        return;
    }
    let Ok(answer) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let responses = match answer {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut filters = node.filters.lock().expect("filter ids");
    for response in responses {
        if let Some(id) = response.get("result").and_then(Value::as_str)
            && id.starts_with("0x")
            && id.len() == 34
        {
            filters.push(id.to_owned());
            if filters.len() > 64 {
                filters.remove(0);
            }
        }
    }
}

/// Builds requests from the structured mode's bytes.
struct Generator<'a> {
    node: &'static Node,
    r: Reader<'a>,
    /// Nonce offsets already used by transactions signed for this input.
    signed: u64,
}

const TAGS: [&str; 6] = ["latest", "earliest", "pending", "safe", "finalized", "0x0"];
const FIELDS: [&str; 12] = [
    "from",
    "to",
    "data",
    "input",
    "value",
    "gas",
    "gasPrice",
    "maxFeePerGas",
    "nonce",
    "fromBlock",
    "toBlock",
    "address",
];

impl<'a> Generator<'a> {
    fn new(node: &'static Node, data: &'a [u8]) -> Self {
        Self {
            node,
            r: Reader::new(data),
            signed: 0,
        }
    }

    /// One request, or a batch: bit 0 of the first byte says which, the rest how many.
    async fn requests(&mut self) -> Value {
        let flags = self.r.u8();
        if flags & 1 == 0 {
            return self.request().await;
        }
        let count = usize::from(flags >> 1) % 8 + 1;
        let mut batch = Vec::new();
        for _ in 0..count {
            batch.push(self.request().await);
        }
        Value::Array(batch)
    }

    async fn request(&mut self) -> Value {
        let m = usize::from(self.r.u8());
        let method = match METHODS.get(m) {
            Some(name) => Value::from(*name),
            None if m == 0xff => Value::from(self.r.string()),
            None => Value::from(METHODS[m % METHODS.len()]),
        };
        let shape = self.r.u8();
        let mut call = Map::new();
        match shape & 3 {
            0 | 1 => {
                call.insert("jsonrpc".into(), "2.0".into());
            }
            2 => {
                call.insert("jsonrpc".into(), "1.0".into());
            }
            _ => {}
        }
        call.insert("method".into(), method);
        match shape >> 2 & 3 {
            0 => {
                call.insert("id".into(), self.r.u16().into());
            }
            1 => {
                call.insert("id".into(), self.r.string().into());
            }
            2 => {
                call.insert("id".into(), Value::Null);
            }
            _ => {} // a notification
        }
        match shape >> 4 & 3 {
            0 | 1 => {
                let n = self.r.u8() % 5;
                let mut params = Vec::new();
                for _ in 0..n {
                    params.push(self.atom(0).await);
                }
                call.insert("params".into(), Value::Array(params));
            }
            2 => {
                let params = self.object(0).await;
                call.insert("params".into(), params);
            }
            _ => {}
        }
        Value::Object(call)
    }

    async fn object(&mut self, depth: u8) -> Value {
        let mut object = Map::new();
        let fields = self.r.u16();
        for (i, field) in FIELDS.iter().enumerate() {
            if fields >> i & 1 == 1 {
                object.insert((*field).into(), Box::pin(self.atom(depth + 1)).await);
            }
        }
        if fields >> 12 & 1 == 1 {
            let topics = Box::pin(self.atom(depth + 1)).await;
            object.insert("topics".into(), Value::Array(vec![topics, Value::Null]));
        }
        if fields >> 13 & 1 == 1 {
            let key = self.r.string();
            object.insert(key, Box::pin(self.atom(depth + 1)).await);
        }
        Value::Object(object)
    }

    async fn atom(&mut self, depth: u8) -> Value {
        if depth > 3 {
            return Value::Null;
        }
        let tag = self.r.u8();
        match tag % 20 {
            0 => {
                let address = match self.r.u8() % 5 {
                    0 => DEV_ACCOUNTS[0],
                    1 => DEV_ACCOUNTS[1],
                    2 => Address::ZERO,
                    3 => Address::repeat_byte(0x70),
                    _ => Address::from_slice(&fixed::<20>(self.r.bytes())),
                };
                Value::from(address.to_string())
            }
            1 => Value::from(TAGS[usize::from(self.r.u8()) % TAGS.len()]),
            2 => Value::from(format!("{:#x}", self.r.u64())),
            3 => Value::from(format!("0x{}", hex::encode(self.r.bytes()))),
            4 => Value::from(B256::from(fixed::<32>(self.r.bytes())).to_string()),
            5 => self.known_hash().await,
            6 => Value::from(self.r.bool()),
            7 => Value::Null,
            8 => match self.r.u8() % 3 {
                0 => Value::from(self.r.u64()),
                1 => Value::from(-i64::from(self.r.u32())),
                _ => json!(f64::from(self.r.u32()) / 7.0),
            },
            9 => Value::from(self.r.string()),
            10 | 11 => Box::pin(self.object(depth)).await,
            12 => {
                let n = self.r.u8() % 4;
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(Box::pin(self.atom(depth + 1)).await);
                }
                Value::Array(items)
            }
            13 | 14 => self.fresh_transaction().await,
            15 => {
                let seeds = signed_transactions(usize::from(self.r.u8() & 1), 0);
                let (_, raw) = &seeds[usize::from(self.r.u8()) % seeds.len()];
                Value::from(raw.to_string())
            }
            16 => json!([10.0, 50.0, 90.0]),
            17 => Value::from(
                ["newHeads", "logs", "newPendingTransactions", "syncing"]
                    [usize::from(self.r.u8()) % 4],
            ),
            _ => {
                let filters = self.node.filters.lock().expect("filter ids").clone();
                match filters.len() {
                    0 => Value::from("0x00000000000000000000000000000001"),
                    n => Value::from(filters[usize::from(self.r.u8()) % n].clone()),
                }
            }
        }
    }

    /// The hash of a real block or of a transaction in one.
    async fn known_hash(&mut self) -> Value {
        let chain = &self.node.chain;
        let head = chain.head().await.unwrap_or(0);
        let number = head.saturating_sub(u64::from(self.r.u8() % 4));
        match chain.block_by_number(number).await {
            Ok(Some(block)) => match block.transactions.first() {
                Some(tx) if self.r.bool() => Value::from(tx.hash.to_string()),
                _ => Value::from(block.hash.to_string()),
            },
            _ => Value::Null,
        }
    }

    /// A transaction of development account 1, signed now with its next nonce (or a little
    /// past it: a gap), as raw hex.
    async fn fresh_transaction(&mut self) -> Value {
        let sender = DEV_ACCOUNTS[1];
        let nonce = self.node.chain.pending_nonce(sender).await.unwrap_or(0);
        let nonce = nonce + self.signed + u64::from(self.r.u8() % 2);
        self.signed += 1;
        let kind = self.r.u8();
        let key = dev_signer(1);
        let to = match kind % 3 {
            0 => TxKind::Call(DEV_ACCOUNTS[0]),
            1 => TxKind::Create,
            _ => TxKind::Call(Address::from_slice(&fixed::<20>(self.r.bytes()))),
        };
        let input = match to {
            TxKind::Create if kind & 4 == 0 => probe_creation_code(),
            _ => Bytes::copy_from_slice(self.r.bytes()),
        };
        let gas_limit = 21_000 + u64::from(self.r.u32() % 3_000_000);
        let envelope = if kind & 8 == 0 {
            signed(
                TxEip1559 {
                    chain_id: parsec_evm::DEFAULT_CHAIN_ID,
                    nonce,
                    gas_limit,
                    max_fee_per_gas: 2 * GWEI,
                    max_priority_fee_per_gas: 0,
                    to,
                    value: U256::from(self.r.u16()),
                    access_list: Default::default(),
                    input,
                },
                &key,
            )
        } else {
            signed(
                TxLegacy {
                    chain_id: Some(parsec_evm::DEFAULT_CHAIN_ID),
                    nonce,
                    gas_price: 2 * GWEI,
                    gas_limit,
                    to,
                    value: U256::from(self.r.u16()),
                    input,
                },
                &key,
            )
        };
        let raw = envelope.expect("a development key signs").encoded_2718();
        Value::from(Bytes::from(raw).to_string())
    }
}

/// `bytes` cut or zero-padded to `N`.
fn fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = bytes.len().min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// A structured input asking for `method` with `params` atoms already encoded (for the seed
/// corpus): a single request with a numeric id.
pub fn structured_input(method: &str, atoms: &[&[u8]]) -> Vec<u8> {
    let index = METHODS
        .iter()
        .position(|m| *m == method)
        .expect("a known method") as u8;
    let mut w = Writer::new();
    w.u8(STRUCTURED)
        .u8(0)
        .u8(index)
        .u8(0)
        .u16(1)
        .u8(atoms.len() as u8);
    for atom in atoms {
        w.rest(atom);
    }
    w.finish()
}
