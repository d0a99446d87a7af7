//! Hostile traffic: what an attacker or a broken client sends to every port a cluster opens,
//! and whether each attempt got the answer it deserves (a clear refusal, or a normal answer
//! where the request was merely expensive) — never a crash, a hang, a 5xx or an internal error.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, U256};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use parsec_proto as pb;
use parsec_transport::{Authority, Tls};
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::AgentPool;
use crate::raw_grpc;
use crate::signer::Secp256k1Signer;

/// One kind of hostile request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Random bytes as a JSON-RPC body.
    RpcGarbage,
    /// Truncated, deeply nested or otherwise broken JSON.
    RpcMalformedJson,
    /// A body over the size limit.
    RpcOversized,
    /// A batch over the length limit.
    RpcBatchBomb,
    /// Real methods with random parameters.
    RpcBadParams,
    /// Undecodable, foreign-chain, unfunded, oversized and gapped transactions.
    RpcBadTransactions,
    /// Legal but expensive: whole-history log queries, calls asking for all the gas there is.
    RpcExpensive,
    /// WebSocket garbage frames and subscription floods, then an abrupt close.
    WsAbuse,
    /// Random bytes straight onto a TCP port (JSON-RPC, gRPC, Raft).
    TcpGarbage,
    /// A connection held open without a word.
    TcpIdle,
    /// Random messages to the shards', ticket machine's and agents' data methods, from a
    /// client holding the cluster's certificate (a broken peer).
    GrpcGarbage,
    /// Calls to every gRPC port without a certificate of the cluster's CA (TLS clusters).
    GrpcWithoutCertificate,
    /// Lua contracts that loop, allocate without end or fail.
    LuaHostile,
}

impl Attack {
    pub const ALL: [Attack; 13] = [
        Attack::RpcGarbage,
        Attack::RpcMalformedJson,
        Attack::RpcOversized,
        Attack::RpcBatchBomb,
        Attack::RpcBadParams,
        Attack::RpcBadTransactions,
        Attack::RpcExpensive,
        Attack::WsAbuse,
        Attack::TcpGarbage,
        Attack::TcpIdle,
        Attack::GrpcGarbage,
        Attack::GrpcWithoutCertificate,
        Attack::LuaHostile,
    ];
}

/// How the cluster answered one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused with a clear error (or the connection closed on the attacker).
    Refused,
    /// Served normally: the request was legal, if unusual.
    Answered,
    /// A crash, a hang, a server error or an accepted forgery.
    Unexpected(String),
}

/// The answers one kind of attack got.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttackTally {
    pub attack: Option<Attack>,
    pub sent: u64,
    pub refused: u64,
    pub answered: u64,
    pub unexpected: u64,
    /// The first few unexpected answers, for the report.
    pub examples: Vec<String>,
}

/// Counts of every attack, shared by the attacking tasks.
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<Attack, AttackTally>>);

impl Tally {
    pub fn record(&self, attack: Attack, outcome: Outcome) {
        let mut all = self.0.lock();
        let tally = all.entry(attack).or_insert_with(|| AttackTally {
            attack: Some(attack),
            ..AttackTally::default()
        });
        tally.sent += 1;
        match outcome {
            Outcome::Refused => tally.refused += 1,
            Outcome::Answered => tally.answered += 1,
            Outcome::Unexpected(what) => {
                tally.unexpected += 1;
                if tally.examples.len() < 5 {
                    tally.examples.push(what);
                }
            }
        }
    }

    pub fn sent(&self) -> u64 {
        self.0.lock().values().map(|t| t.sent).sum()
    }

    pub fn unexpected(&self) -> u64 {
        self.0.lock().values().map(|t| t.unexpected).sum()
    }

    pub fn snapshot(&self) -> Vec<AttackTally> {
        self.0.lock().values().cloned().collect()
    }
}

/// Where the attacks go.
#[derive(Clone)]
pub struct Targets {
    /// JSON-RPC `host:port`s.
    pub rpc: Vec<String>,
    /// Agents' gRPC `host:port`s.
    pub agents: Vec<String>,
    /// Every shard replica.
    pub shards: Vec<String>,
    /// Every ticket machine replica.
    pub ticketers: Vec<String>,
    /// The cluster's client identity when it uses mutual TLS.
    pub tls: Option<Tls>,
}

impl Targets {
    fn raft_members(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().chain(&self.ticketers)
    }
}

/// One attacker: an HTTP client, the agents (gRPC) and a certificate of another CA.
pub struct Attacker {
    targets: Targets,
    /// The chain id the agents check signatures against.
    chain_id: u64,
    http: reqwest::Client,
    agents: Option<AgentPool>,
    stranger: Option<Tls>,
}

/// Methods whose random parameters the server must survive.
const METHODS: [&str; 16] = [
    "eth_getBalance",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getTransactionCount",
    "eth_call",
    "eth_estimateGas",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getLogs",
    "eth_newFilter",
    "eth_getFilterChanges",
    "eth_feeHistory",
    "eth_sendRawTransaction",
    "web3_sha3",
];

/// Data methods a broken peer may call with garbage. Not Heartbeat, Commit, Rollback, Finish
/// or ReportBlocks: those carry an agent's authority over its own tickets, which a peer holding
/// the cluster's certificate is trusted with (a garbage heartbeat for agent 0 legitimately
/// ends that agent's incarnation).
const PEER_METHODS: [(&str, &str); 10] = [
    ("shard", "/parsec.v1.Shard/Lock"),
    ("shard", "/parsec.v1.Shard/Prepare"),
    ("shard", "/parsec.v1.Shard/GetTickets"),
    ("shard", "/parsec.v1.Shard/Read"),
    ("shard", "/parsec.v1.Shard/Status"),
    ("ticketer", "/parsec.v1.TicketMachine/AllocateRange"),
    ("ticketer", "/parsec.v1.TicketMachine/GetBlockParts"),
    ("agent", "/parsec.v1.Agent/Execute"),
    ("agent", "/parsec.v1.Agent/Deploy"),
    ("agent", "/parsec.v1.Agent/Read"),
];

/// Lua contracts that must each fail cleanly.
const HOSTILE_CONTRACTS: [(&str, &str); 4] = [
    ("soak/bad/loop", "while true do end"),
    (
        "soak/bad/alloc",
        "local t = {} local s = string.rep('x', 1 << 20) while true do t[#t + 1] = s .. #t end",
    ),
    ("soak/bad/error", "error('boom')"),
    // Fails only while the sandbox holds: a contract that reached any of these would return.
    (
        "soak/bad/escape",
        "if not (load or require or io or os or debug or (string and string.dump)) then \
         error('sandboxed') end return {}",
    ),
];

fn random_bytes(max: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    let len = rng.random_range(1..=max);
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes[..]);
    bytes
}

fn random_json(depth: u32) -> Value {
    let mut rng = rand::rng();
    match rng.random_range(0..8) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(format!(
            "0x{}",
            alloy_primitives::hex::encode(random_bytes(40))
        )),
        4 => json!(String::from_utf8_lossy(&random_bytes(16)).into_owned()),
        5 => json!(
            [
                "latest",
                "pending",
                "earliest",
                "0xffffffffffffffffffff",
                "-1"
            ][rng.random_range(0..5)]
        ),
        6 if depth < 3 => Value::Array(
            (0..rng.random_range(0..4))
                .map(|_| random_json(depth + 1))
                .collect(),
        ),
        _ if depth < 3 => {
            let keys = [
                "from",
                "to",
                "data",
                "gas",
                "value",
                "fromBlock",
                "toBlock",
                "address",
                "topics",
                "blockHash",
            ];
            let mut object = serde_json::Map::new();
            for _ in 0..rng.random_range(0..4) {
                object.insert(
                    keys[rng.random_range(0..keys.len())].into(),
                    random_json(depth + 1),
                );
            }
            Value::Object(object)
        }
        _ => json!(0),
    }
}

/// What a reply says: an error code per call (`None`: a result).
fn reply_codes(body: &[u8]) -> Option<Vec<Option<i64>>> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let replies = match value {
        Value::Array(replies) => replies,
        one => vec![one],
    };
    Some(
        replies
            .iter()
            .map(|reply| reply.get("error").map(|e| e["code"].as_i64().unwrap_or(0)))
            .collect(),
    )
}

/// Judges a JSON-RPC reply: `must_fail` requests may not get a result.
fn judge_http(status: u16, body: &[u8], must_fail: bool) -> Outcome {
    if status >= 500 {
        return Outcome::Unexpected(format!("HTTP {status}: {}", String::from_utf8_lossy(body)));
    }
    if status != 200 {
        // 413 (too large), 429 (too many connections), 415 (not JSON) …: a clear refusal.
        return Outcome::Refused;
    }
    let Some(codes) = reply_codes(body) else {
        return Outcome::Unexpected(format!(
            "a 200 that is not JSON-RPC: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    };
    if codes.contains(&Some(-32603)) {
        return Outcome::Unexpected(format!("internal error: {}", String::from_utf8_lossy(body)));
    }
    match (codes.iter().all(Option::is_some), must_fail) {
        (true, _) => Outcome::Refused,
        (false, true) => Outcome::Unexpected(format!(
            "accepted: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )),
        (false, false) => Outcome::Answered,
    }
}

impl Attacker {
    pub async fn new(targets: Targets) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let agents = match targets.agents.is_empty() {
            true => None,
            false => Some(
                AgentPool::connect(&targets.agents, targets.tls.as_ref())
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let stranger = match &targets.tls {
            Some(_) => Some(stranger_identity()?),
            None => None,
        };
        let chain_id = chain_id(&http, &targets.rpc).await?;
        Ok(Self {
            targets,
            chain_id,
            http,
            agents,
            stranger,
        })
    }

    fn pick<'a>(&self, from: &'a [String]) -> Option<&'a String> {
        (!from.is_empty()).then(|| &from[rand::rng().random_range(0..from.len())])
    }

    /// Makes one attempt of `attack`; `None` when the cluster offers no target for it.
    pub async fn attempt(&self, attack: Attack) -> Option<Outcome> {
        match attack {
            Attack::RpcGarbage => self.post(random_bytes(2048), true).await,
            Attack::RpcMalformedJson => self.post(malformed_json(), true).await,
            Attack::RpcOversized => {
                let body = format!(
                    r#"{{"jsonrpc":"2.0","id":1,"method":"web3_sha3","params":["0x{}"]}}"#,
                    "ab".repeat(3 << 20)
                );
                self.post(body.into_bytes(), true).await
            }
            Attack::RpcBatchBomb => {
                let batch: Vec<Value> = (0..1_001)
                    .map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "eth_chainId"}))
                    .collect();
                self.post(serde_json::to_vec(&batch).unwrap_or_default(), true)
                    .await
            }
            Attack::RpcBadParams => {
                let method = METHODS[rand::rng().random_range(0..METHODS.len())];
                let params = random_json(0);
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
                self.post(serde_json::to_vec(&body).unwrap_or_default(), false)
                    .await
            }
            Attack::RpcBadTransactions => {
                let raw = self.bad_transaction();
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]});
                self.post(serde_json::to_vec(&body).unwrap_or_default(), true)
                    .await
            }
            Attack::RpcExpensive => {
                let body = match rand::rng().random_range(0..3) {
                    0 => {
                        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [{"fromBlock": "earliest", "toBlock": "latest"}]})
                    }
                    1 => {
                        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": Address::ZERO, "gas": "0xffffffffffffffff"}, "latest"]})
                    }
                    _ => {
                        json!({"jsonrpc": "2.0", "id": 1, "method": "eth_estimateGas", "params": [{"to": Address::ZERO, "gas": "0xffffffffffffffff", "value": "0x1"}]})
                    }
                };
                self.post(serde_json::to_vec(&body).unwrap_or_default(), false)
                    .await
            }
            Attack::WsAbuse => self.ws_abuse().await,
            Attack::TcpGarbage => self.tcp_garbage().await,
            Attack::TcpIdle => self.tcp_idle().await,
            Attack::GrpcGarbage => self.grpc_garbage().await,
            Attack::GrpcWithoutCertificate => self.grpc_without_certificate().await,
            Attack::LuaHostile => self.lua_hostile().await,
        }
    }

    async fn post(&self, body: Vec<u8>, must_fail: bool) -> Option<Outcome> {
        let address = self.pick(&self.targets.rpc)?;
        let sent = self
            .http
            .post(format!("http://{address}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        Some(match sent {
            Ok(reply) => {
                let status = reply.status().as_u16();
                match reply.bytes().await {
                    Ok(body) => judge_http(status, &body, must_fail),
                    Err(e) => Outcome::Unexpected(format!("reading the reply: {e}")),
                }
            }
            // The server closing on a body it refuses to read is a refusal; one that does not
            // answer at all is not.
            Err(e) if e.is_timeout() || e.is_connect() => {
                Outcome::Unexpected(format!("{address}: {e}"))
            }
            Err(_) => Outcome::Refused,
        })
    }

    /// A transaction the agent must refuse: undecodable, for another chain, from an account
    /// with nothing, too big, or with a nonce gap that never closes.
    fn bad_transaction(&self) -> String {
        let mut rng = rand::rng();
        let kind = rng.random_range(0..5);
        let raw = match kind {
            0 => Bytes::from(random_bytes(300)),
            _ => {
                let signer = Secp256k1Signer::random();
                let (chain_id, nonce, input) = match kind {
                    1 => (self.chain_id.wrapping_add(1), 0, Vec::new()),
                    2 => (self.chain_id, 0, Vec::new()),
                    3 => (self.chain_id, 0, vec![0u8; 200 << 10]),
                    _ => (self.chain_id, 5, Vec::new()),
                };
                let tx = TxEip1559 {
                    chain_id,
                    nonce,
                    gas_limit: 30_000_000,
                    max_fee_per_gas: 1_000_000_000,
                    max_priority_fee_per_gas: 0,
                    to: TxKind::Call(Address::repeat_byte(0x5a)),
                    // One wei more than the fresh account holds.
                    value: U256::from(1),
                    access_list: Default::default(),
                    input: input.into(),
                };
                let signature = signer.sign_hash(&tx.signature_hash());
                let envelope: TxEnvelope = tx.into_signed(signature).into();
                Bytes::from(envelope.encoded_2718())
            }
        };
        format!("0x{}", alloy_primitives::hex::encode(raw))
    }

    async fn ws_abuse(&self) -> Option<Outcome> {
        let address = self.pick(&self.targets.rpc)?;
        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(format!("ws://{address}")),
        )
        .await;
        let mut ws = match connected {
            Ok(Ok((ws, _))) => ws,
            // Over the connection limit: refused with HTTP 429.
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response)))
                if response.status().as_u16() == 429 =>
            {
                return Some(Outcome::Refused);
            }
            Ok(Err(e)) => return Some(Outcome::Unexpected(format!("ws {address}: {e}"))),
            Err(_) => {
                return Some(Outcome::Unexpected(format!(
                    "ws {address}: no handshake in 10 s"
                )));
            }
        };
        let mut frames = vec![
            Message::text(String::from_utf8_lossy(&random_bytes(512)).into_owned()),
            Message::binary(random_bytes(512)),
            Message::text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":"),
        ];
        for id in 0..20 {
            frames.push(Message::text(
                json!({"jsonrpc": "2.0", "id": id, "method": "eth_subscribe", "params": ["newHeads"]})
                    .to_string(),
            ));
        }
        for frame in frames {
            if ws.send(frame).await.is_err() {
                // The server closed on the garbage: a refusal.
                return Some(Outcome::Refused);
            }
        }
        // Every text frame gets an answer; wait for one, then vanish without a close frame.
        let answered = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
        Some(match answered {
            Ok(_) => Outcome::Refused,
            Err(_) => Outcome::Unexpected(format!("ws {address}: no answer in 10 s")),
        })
    }

    fn any_port(&self) -> Option<&String> {
        let all: Vec<&String> = self
            .targets
            .rpc
            .iter()
            .chain(&self.targets.agents)
            .chain(self.targets.raft_members())
            .collect();
        (!all.is_empty()).then(|| all[rand::rng().random_range(0..all.len())])
    }

    async fn tcp_garbage(&self) -> Option<Outcome> {
        let address = self.any_port()?;
        let mut stream = match TcpStream::connect(address).await {
            Ok(stream) => stream,
            Err(e) => return Some(Outcome::Unexpected(format!("connect {address}: {e}"))),
        };
        if stream.write_all(&random_bytes(4096)).await.is_err() {
            return Some(Outcome::Refused);
        }
        // The server answers with an error, closes, or waits for more: all fine. It must not
        // stop accepting, which the next attempts would see.
        let mut buffer = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
        Some(Outcome::Refused)
    }

    async fn tcp_idle(&self) -> Option<Outcome> {
        let address = self.any_port()?;
        Some(match TcpStream::connect(address).await {
            Ok(mut stream) => {
                let mut buffer = [0u8; 64];
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await;
                Outcome::Refused
            }
            Err(e) => Outcome::Unexpected(format!("connect {address}: {e}")),
        })
    }

    async fn grpc_garbage(&self) -> Option<Outcome> {
        let (role, path) = PEER_METHODS[rand::rng().random_range(0..PEER_METHODS.len())];
        let addresses = match role {
            "shard" => &self.targets.shards,
            "ticketer" => &self.targets.ticketers,
            _ => &self.targets.agents,
        };
        let address = self.pick(addresses)?;
        let channel = match connect(address, self.targets.tls.as_ref()).await {
            Ok(channel) => channel,
            Err(e) => return Some(Outcome::Unexpected(format!("connect {address}: {e}"))),
        };
        let called = tokio::time::timeout(
            Duration::from_secs(30),
            raw_grpc::call(&channel, path, Bytes::from(random_bytes(256))),
        )
        .await;
        Some(match called {
            Ok(Ok(_)) => Outcome::Answered,
            // gRPC's own rule: a request that does not parse is INTERNAL (statuscodes.md).
            // Any other INTERNAL is a server fault.
            Ok(Err(status))
                if status.code() == tonic::Code::Internal
                    && !status
                        .message()
                        .starts_with("failed to decode Protobuf message") =>
            {
                Outcome::Unexpected(format!("{path} at {address}: {status}"))
            }
            Ok(Err(status))
                if status.code() == tonic::Code::Unavailable
                    && status.message().contains("transport") =>
            {
                Outcome::Unexpected(format!("{path} at {address}: {status}"))
            }
            Ok(Err(_)) => Outcome::Refused,
            Err(_) => Outcome::Unexpected(format!("{path} at {address}: no answer in 30 s")),
        })
    }

    /// Without the cluster's certificate — in plain text, or with one of another CA — no port
    /// may serve anything, the Raft admin API included.
    async fn grpc_without_certificate(&self) -> Option<Outcome> {
        let stranger = self.stranger.as_ref()?;
        let all: Vec<&String> = self
            .targets
            .agents
            .iter()
            .chain(self.targets.raft_members())
            .collect();
        let address = *all.get(rand::rng().random_range(0..all.len().max(1)))?;
        let identity = if rand::rng().random::<bool>() {
            Some(stranger)
        } else {
            None
        };
        let Ok(channel) = connect(address, identity).await else {
            return Some(Outcome::Refused);
        };
        let paths = [
            "/parsec.raft.v1.RaftAdmin/Status",
            "/parsec.raft.v1.RaftAdmin/RemoveMember",
            "/parsec.raft.v1.RaftTransport/Vote",
            "/parsec.v1.Shard/Status",
            "/parsec.v1.Agent/ClusterStatus",
        ];
        let path = paths[rand::rng().random_range(0..paths.len())];
        Some(match raw_grpc::call(&channel, path, Bytes::new()).await {
            Err(_) => Outcome::Refused,
            Ok(_) => Outcome::Unexpected(format!("{path} at {address} served a stranger")),
        })
    }

    async fn lua_hostile(&self) -> Option<Outcome> {
        let agents = self.agents.as_ref()?;
        let (key, code) = HOSTILE_CONTRACTS[rand::rng().random_range(0..HOSTILE_CONTRACTS.len())];
        let mut agent = agents.agent(rand::rng().random_range(0..agents.len()));
        let deployed = agent
            .deploy(pb::DeployRequest {
                key: Bytes::from(key),
                code: Bytes::from(code),
                runtime: pb::Runtime::Lua as i32,
            })
            .await;
        match deployed {
            Ok(reply) if reply.get_ref().error.is_none() => {}
            Ok(reply) => {
                return Some(Outcome::Unexpected(format!(
                    "deploy {key}: {:?}",
                    reply.into_inner()
                )));
            }
            Err(status) => return Some(Outcome::Unexpected(format!("deploy {key}: {status}"))),
        }
        let executed = agent
            .execute(pb::ExecuteRequest {
                contract: Bytes::from(key),
                param: Bytes::new(),
                read_only: false,
                runtime: pb::Runtime::Lua as i32,
            })
            .await;
        Some(match executed {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.error.is_some() && reply.writes.is_empty() {
                    Outcome::Refused
                } else {
                    Outcome::Unexpected(format!("{key} ran: {reply:?}"))
                }
            }
            Err(status) => Outcome::Unexpected(format!("execute {key}: {status}")),
        })
    }
}

/// `eth_chainId` of the first JSON-RPC endpoint.
async fn chain_id(http: &reqwest::Client, rpc: &[String]) -> Result<u64, String> {
    let address = rpc.first().ok_or("no JSON-RPC endpoint")?;
    let reply: Value = http
        .post(format!("http://{address}"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
        .send()
        .await
        .map_err(|e| format!("eth_chainId at {address}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("eth_chainId at {address}: {e}"))?;
    reply["result"]
        .as_str()
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        .ok_or_else(|| format!("eth_chainId at {address} answered {reply}"))
}

fn malformed_json() -> Vec<u8> {
    let valid = br#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    match rand::rng().random_range(0..5) {
        0 => valid[..rand::rng().random_range(1..valid.len())].to_vec(),
        1 => "[".repeat(100_000).into_bytes(),
        2 => {
            br#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["\xff\xfe",1e999999]}"#
                .to_vec()
        }
        3 => br#"{"jsonrpc":"1.0","id":{"a":[1,2,{"b":null}]},"method":7}"#.to_vec(),
        _ => br#"[{},{},[],1,"x",null]"#.to_vec(),
    }
}

async fn connect(address: &str, tls: Option<&Tls>) -> Result<tonic::transport::Channel, String> {
    parsec_transport::endpoint(address, tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| parsec_core::error_chain(&e))
}

/// A certificate of a CA that is not the cluster's.
fn stranger_identity() -> Result<Tls, String> {
    let authority = Authority::new("a stranger's CA").map_err(|e| e.to_string())?;
    let issued = authority
        .issue(&["127.0.0.1".into(), "localhost".into()])
        .map_err(|e| e.to_string())?;
    Tls::from_pem(
        authority.ca_pem().as_bytes(),
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_judged_by_what_they_say() {
        let error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad"}}"#;
        let result = br#"{"jsonrpc":"2.0","id":1,"result":"0x1"}"#;
        let internal = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"x"}}"#;
        assert_eq!(judge_http(200, error, true), Outcome::Refused);
        assert_eq!(judge_http(200, result, false), Outcome::Answered);
        assert!(matches!(
            judge_http(200, result, true),
            Outcome::Unexpected(_)
        ));
        assert!(matches!(
            judge_http(200, internal, false),
            Outcome::Unexpected(_)
        ));
        assert!(matches!(
            judge_http(502, b"", false),
            Outcome::Unexpected(_)
        ));
        assert_eq!(judge_http(413, b"", true), Outcome::Refused);
        assert!(matches!(
            judge_http(200, b"<html>", true),
            Outcome::Unexpected(_)
        ));
        let batch = br#"[{"id":1,"error":{"code":-32601}},{"id":2,"result":"0x1"}]"#;
        assert_eq!(judge_http(200, batch, false), Outcome::Answered);
    }

    #[test]
    fn the_tally_counts_and_keeps_a_few_examples() {
        let tally = Tally::default();
        for _ in 0..7 {
            tally.record(Attack::RpcGarbage, Outcome::Unexpected("x".into()));
        }
        tally.record(Attack::TcpIdle, Outcome::Refused);
        assert_eq!((tally.sent(), tally.unexpected()), (8, 7));
        let snapshot = tally.snapshot();
        assert_eq!(snapshot[0].examples.len(), 5);
    }
}
