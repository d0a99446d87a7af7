//! Writes the seed corpus: `cargo run -p parsec-fuzz --example seeds` (from anywhere in the
//! repository) fills `fuzz/corpus/<target>/seed-*` with real inputs of every kind each target
//! takes. `scripts/fuzz.sh` minimises the corpus with `cargo fuzz cmin` afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use parsec_agent::lua::contracts::{self, balances_param, mint_param, pay_param, pubkey};
use parsec_fuzz::seeds::{LUA_CONTRACTS, signed_transactions};
use parsec_proto as pb;
use secp256k1::{Keypair, SECP256K1};

fn corpus(target: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn write(target: &str, name: &str, data: &[u8]) {
    std::fs::write(corpus(target).join(format!("seed-{name}")), data).expect("write seed");
}

/// Deterministic filler bytes (no RNG crate needed).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tx_decode() {
    for signer in 0..2 {
        for (name, raw) in signed_transactions(signer, 0) {
            write("tx_decode", &format!("{name}-{signer}"), &raw);
        }
    }
    for i in 0..8 {
        let mut data = vec![parsec_fuzz::tx_decode::STRUCTURED];
        data.extend(noise(i, 64 + 32 * i as usize));
        write("tx_decode", &format!("structured-{i}"), &data);
    }
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_seckey_byte_array(SECP256K1, [seed; 32]).expect("key")
}

/// Snippets of the runner's tests: the protocol, the sandbox's edges, the limits.
const LUA_SNIPPETS: &[&str] = &[
    "return {}",
    "local a, b = coroutine.yield('a', 'b') return { a = a .. 'x', b = b }",
    "while true do end",
    "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) end",
    "return { t = type(load), u = type(getmetatable('')) }",
    "string.x = 1",
    "rawset(string, 'dump', 1) return {}",
    "setmetatable({}, { __gc = function() end })",
    "setmetatable({}, { __mode = 'k' })",
    "_ENV = { leaked = 1 } return {}",
    "leaked = 1 return {}",
    "error(setmetatable({}, { __tostring = function() while true do end end }))",
    "return { k = string.rep('ab', 10, ',') }",
    "return { k = string.format('%q %d %s', 'x', 1, {}) }",
    "return { k = tostring(string.find('x.y', '.', 1)) }",
    "local t = {1,2,3} table.insert(t, 1, 0) table.move(t, 1, 4, 2) return { k = table.concat(t, ',') }",
    "return { k = utf8.char(72, 228, 8364) }",
    "return { k = sha256('abc') }",
    "return { k = tostring(verify_schnorr('a', 'b', 'c')) }",
    "coroutine.yield() return {}",
    "coroutine.yield(1) return {}",
    "coroutine.yield(string.rep('k', 2000)) return {}",
    "return 1, 2",
    "return { [1] = 'x' }",
    "local k = coroutine.yield('k') return { k = string.rep('v', 70000) }",
    "return { k = 'v' }",
    "local x <close> = setmetatable({}, { __close = function() end }) return {}",
    "goto done ::done:: return {}",
    "return { k = string.pack('>i8', math.maxinteger) }",
    "local s = ('x'):rep(1e6) return { k = tostring(#s) }",
];

fn lua() {
    for (name, source) in LUA_CONTRACTS {
        write("lua", &format!("contract-{name}"), source.as_bytes());
    }
    for (i, snippet) in LUA_SNIPPETS.iter().enumerate() {
        write("lua", &format!("snippet-{i:02}"), snippet.as_bytes());
    }
    // The shipped contracts called as the agent calls them, with stored accounts.
    let alice = keypair(1);
    let bob = keypair(2);
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let funded = contracts::encode_account(1_000, 0);
    let pay = pay_param(&alice, &b, 10, 0);
    let structured = |source: &str, param: &[u8], read_only: bool, values: &[&[u8]]| {
        parsec_fuzz::lua::structured_input(source, param, read_only, values)
    };
    write(
        "lua",
        "call-pay",
        &structured(contracts::PAY, &pay, false, &[&funded, &[]]),
    );
    write(
        "lua",
        "call-mint",
        &structured(contracts::MINT, &mint_param(&[(a, 5), (b, 7)]), false, &[]),
    );
    write(
        "lua",
        "call-balances",
        &structured(
            contracts::BALANCES,
            &balances_param(&[a, b]),
            true,
            &[&funded],
        ),
    );
    write(
        "lua",
        "call-counter",
        &structured(LUA_CONTRACTS[0].1, b"5", false, &[b"41"]),
    );
}

fn lock_table() {
    for i in 0..16 {
        write(
            "lock_table",
            &format!("random-{i:02}"),
            &noise(100 + i, 32 << (i % 5)),
        );
    }
}

fn key_lock(key: &str, write: bool) -> pb::KeyLock {
    pb::KeyLock {
        key: Bytes::copy_from_slice(key.as_bytes()),
        mode: if write {
            pb::LockMode::Write
        } else {
            pb::LockMode::Read
        } as i32,
    }
}

fn lock(ticket: u64, attempt: u32, first: bool, locks: Vec<pb::KeyLock>) -> pb::LockRequest {
    pb::LockRequest {
        ticket,
        attempt,
        agent: 5,
        first,
        locks,
        wait_timeout_ms: 20,
    }
}

fn kv(key: &str, value: &str) -> pb::KeyValue {
    pb::KeyValue {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    }
}

fn prepare(
    ticket: u64,
    writes: Vec<pb::KeyValue>,
    lock_count: u32,
    commit: bool,
) -> pb::PrepareRequest {
    pb::PrepareRequest {
        ticket,
        attempt: 0,
        agent: 5,
        writes,
        participants: vec![0],
        lock_count,
        commit,
    }
}

fn ticket(ticket: u64, fence: bool) -> pb::TicketRequest {
    pb::TicketRequest {
        ticket,
        attempt: 0,
        fence,
    }
}

fn execute(contract: &str, param: &[u8], read_only: bool) -> pb::ExecuteRequest {
    pb::ExecuteRequest {
        contract: parsec_fuzz::cluster::contract_key(contract),
        param: Bytes::copy_from_slice(param),
        read_only,
        runtime: pb::Runtime::Lua as i32,
    }
}

fn grpc() {
    use parsec_fuzz::grpc::{Calls, Method as M};
    let mut calls = Calls::default();
    // Two-phase commit of one ticket, then its finish.
    calls.call(
        M::ShardLock,
        0,
        &lock(
            100,
            0,
            true,
            vec![key_lock("a", true), key_lock("b", false)],
        ),
    );
    calls.call(
        M::ShardPrepare,
        0,
        &prepare(100, vec![kv("a", "1")], 2, false),
    );
    calls.call(
        M::ShardGetTickets,
        0,
        &pb::GetTicketsRequest {
            agent: Some(5),
            ticket: None,
        },
    );
    calls.call(M::ShardCommit, 0, &ticket(100, false));
    calls.call(M::ShardFinish, 0, &ticket(100, false));
    calls.call(
        M::ShardRead,
        0,
        &pb::ReadRequest {
            keys: vec![Bytes::from_static(b"a")],
        },
    );
    write("grpc", "two-phase-commit", &calls.finish());
    // One-phase commit on the other shard.
    calls.call(
        M::ShardLock,
        1,
        &lock(7, 0, true, vec![key_lock("c", true)]),
    );
    calls.call(M::ShardPrepare, 1, &prepare(7, vec![kv("c", "x")], 1, true));
    calls.call(M::ShardStatus, 1, &pb::StatusRequest {});
    write("grpc", "one-phase-commit", &calls.finish());
    // Wound-wait: an older ticket wounds a younger holder, which retries with a new attempt.
    calls.call(
        M::ShardLock,
        0,
        &lock(300, 0, true, vec![key_lock("h", true)]),
    );
    calls.call(
        M::ShardLock,
        0,
        &lock(200, 0, true, vec![key_lock("h", true)]),
    );
    calls.call(
        M::ShardLock,
        0,
        &lock(300, 0, false, vec![key_lock("h", false)]),
    );
    calls.call(
        M::ShardLock,
        0,
        &lock(300, 1, true, vec![key_lock("h", true)]),
    );
    calls.call(M::ShardRollback, 0, &ticket(200, false));
    calls.call(M::ShardRollback, 0, &ticket(300, true));
    calls.call(M::ShardPrepare, 0, &prepare(300, vec![], 0, false));
    write("grpc", "wound-wait", &calls.finish());
    // Malformed requests: no keys, an unknown lock mode, a key written twice, a zero lease.
    calls.call(M::ShardLock, 0, &lock(1, 0, true, vec![]));
    let mut bad_mode = key_lock("m", true);
    bad_mode.mode = 7;
    calls.call(M::ShardLock, 0, &lock(1, 0, true, vec![bad_mode]));
    calls.call(
        M::ShardPrepare,
        0,
        &prepare(2, vec![kv("d", "1"), kv("d", "2")], 0, true),
    );
    calls.call(
        M::ShardHeartbeat,
        1,
        &pb::HeartbeatRequest {
            agent: 5,
            incarnation: 9,
            lease_ms: 0,
        },
    );
    calls.call(
        M::ShardHeartbeat,
        1,
        &pb::HeartbeatRequest {
            agent: 5,
            incarnation: 9,
            lease_ms: 1000,
        },
    );
    write("grpc", "malformed", &calls.finish());
    // The ticket machine.
    calls.call(M::AllocateRange, 0, &pb::AllocateRangeRequest { count: 10 });
    calls.call(M::AllocateRange, 0, &pb::AllocateRangeRequest { count: 0 });
    calls.call(
        M::ReportBlocks,
        0,
        &pb::BlockReport {
            agent: 9,
            through: 3,
            parts: vec![1, 2],
        },
    );
    calls.call(
        M::GetBlockParts,
        0,
        &pb::BlockPartsRequest { from: 0, to: 100 },
    );
    calls.call(
        M::GetBlockParts,
        0,
        &pb::BlockPartsRequest { from: 5, to: 1 },
    );
    write("grpc", "ticket-machine", &calls.finish());
    // The agent: every shipped contract, a deploy and its call, reads.
    let alice = keypair(1);
    let bob = keypair(2);
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    calls.call(M::AgentExecute, 0, &execute("counter", b"5", false));
    calls.call(
        M::AgentExecute,
        0,
        &execute("mint", &mint_param(&[(a, 100)]), false),
    );
    calls.call(
        M::AgentExecute,
        0,
        &execute("pay", &pay_param(&alice, &b, 10, 0), false),
    );
    calls.call(
        M::AgentExecute,
        0,
        &execute("balances", &balances_param(&[a, b]), true),
    );
    calls.call(
        M::AgentRead,
        0,
        &pb::ReadRequest {
            keys: vec![Bytes::from_static(b"counter")],
        },
    );
    calls.call(M::AgentClusterStatus, 0, &pb::StatusRequest {});
    write("grpc", "agent-contracts", &calls.finish());
    let deploy = pb::DeployRequest {
        key: Bytes::from_static(b"mine"),
        code: Bytes::from_static(b"local k = coroutine.yield('x') return { x = k .. '!' }"),
        runtime: pb::Runtime::Lua as i32,
    };
    calls.call(M::AgentDeploy, 0, &deploy);
    calls.call(M::AgentExecute, 0, &execute("mine", b"", false));
    calls.call(M::AgentExecute, 0, &execute("missing", b"", false));
    calls.call(M::AgentExecute, 0, &execute("counter", b"1", true));
    let broken = pb::DeployRequest {
        key: Bytes::from_static(b"broken"),
        code: Bytes::from_static(b"return {"),
        runtime: 3,
    };
    calls.call(M::AgentDeploy, 0, &broken);
    write("grpc", "agent-deploy", &calls.finish());
    // The agent racing a direct lock holder on its counter.
    calls.call(
        M::ShardLock,
        0,
        &lock(1, 0, true, vec![key_lock("counter", true)]),
    );
    calls.call(
        M::ShardLock,
        1,
        &lock(1, 0, true, vec![key_lock("counter", true)]),
    );
    calls.call(M::AgentExecute, 0, &execute("counter", b"2", false));
    write("grpc", "agent-contention", &calls.finish());
}

/// A real request for every method the server implements, a batch, a notification, and
/// structured inputs.
fn json_rpc() {
    use parsec_fuzz::seeds::DEV_ACCOUNTS;
    use serde_json::json;
    let [a, b] = DEV_ACCOUNTS.map(|a| a.to_string());
    let token = "0x7070707070707070707070707070707070707070";
    let raws = signed_transactions(0, 0);
    let raw = |i: usize| raws[i].1.to_string();
    let tx_hash = alloy_primitives::keccak256(&raws[3].1).to_string();
    let block_hash = format!("0x{}", "ab".repeat(32));
    let call = json!({ "from": a, "to": token, "data": "0x70a08231000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cffb92266" });
    let filter = json!({ "fromBlock": "0x0", "toBlock": "latest", "address": token,
                         "topics": [["0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"], null] });
    let requests: Vec<(&str, serde_json::Value)> = vec![
        ("web3_clientVersion", json!([])),
        ("web3_sha3", json!(["0x68656c6c6f"])),
        ("net_version", json!([])),
        ("net_listening", json!([])),
        ("net_peerCount", json!([])),
        ("eth_chainId", json!([])),
        ("eth_syncing", json!([])),
        ("eth_mining", json!([])),
        ("eth_hashrate", json!([])),
        ("eth_coinbase", json!([])),
        ("eth_accounts", json!([])),
        ("eth_blockNumber", json!([])),
        ("eth_gasPrice", json!([])),
        ("eth_maxPriorityFeePerGas", json!([])),
        ("eth_feeHistory", json!(["0x4", "latest", [25, 75]])),
        ("eth_getBlockByNumber", json!(["latest", true])),
        ("eth_getBlockByHash", json!([block_hash, false])),
        ("eth_getBlockTransactionCountByNumber", json!(["0x1"])),
        ("eth_getBlockTransactionCountByHash", json!([block_hash])),
        ("eth_getUncleCountByBlockNumber", json!(["earliest"])),
        ("eth_getUncleCountByBlockHash", json!([block_hash])),
        ("eth_getBlockReceipts", json!(["latest"])),
        ("eth_getBalance", json!([a, "latest"])),
        ("eth_getTransactionCount", json!([b, "pending"])),
        ("eth_getCode", json!([token, "latest"])),
        ("eth_getStorageAt", json!([token, "0x0", "latest"])),
        ("eth_call", json!([call, "latest"])),
        (
            "eth_estimateGas",
            json!([{ "from": a, "to": b, "value": "0x1" }]),
        ),
        ("eth_sendRawTransaction", json!([raw(3)])),
        ("eth_getTransactionByHash", json!([tx_hash])),
        ("eth_getTransactionReceipt", json!([tx_hash])),
        (
            "eth_getTransactionByBlockNumberAndIndex",
            json!(["latest", "0x0"]),
        ),
        (
            "eth_getTransactionByBlockHashAndIndex",
            json!([block_hash, "0x0"]),
        ),
        ("eth_getLogs", json!([filter])),
        ("eth_newFilter", json!([filter])),
        ("eth_newBlockFilter", json!([])),
        ("eth_newPendingTransactionFilter", json!([])),
        (
            "eth_getFilterChanges",
            json!(["0x0123456789abcdef0123456789abcdef"]),
        ),
        (
            "eth_getFilterLogs",
            json!(["0x0123456789abcdef0123456789abcdef"]),
        ),
        (
            "eth_uninstallFilter",
            json!(["0x0123456789abcdef0123456789abcdef"]),
        ),
        ("eth_subscribe", json!(["newHeads"])),
        (
            "eth_unsubscribe",
            json!(["0x0123456789abcdef0123456789abcdef"]),
        ),
    ];
    for (i, (method, params)) in requests.iter().enumerate() {
        let request = json!({ "jsonrpc": "2.0", "id": i + 1, "method": method, "params": params });
        write("json_rpc", method, request.to_string().as_bytes());
    }
    for (i, (name, _)) in raws.iter().enumerate() {
        let request = json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw(i)] });
        write(
            "json_rpc",
            &format!("send-{name}"),
            request.to_string().as_bytes(),
        );
    }
    let batch: Vec<serde_json::Value> = requests
        .iter()
        .take(12)
        .enumerate()
        .map(|(i, (method, params))| json!({ "jsonrpc": "2.0", "id": i, "method": method, "params": params }))
        .collect();
    write(
        "json_rpc",
        "batch",
        serde_json::Value::Array(batch).to_string().as_bytes(),
    );
    let notification = json!({ "jsonrpc": "2.0", "method": "eth_blockNumber", "params": [] });
    write(
        "json_rpc",
        "notification",
        notification.to_string().as_bytes(),
    );
    write(
        "json_rpc",
        "unknown-method",
        br#"{"jsonrpc":"2.0","id":"x","method":"eth_nope","params":[]}"#,
    );
    write("json_rpc", "empty-batch", b"[]");
    write("json_rpc", "not-json", b"{\"jsonrpc\":\"2.0\",");
    // Structured: fresh transactions from the second account, balances, a call.
    use parsec_fuzz::json_rpc::structured_input;
    write(
        "json_rpc",
        "structured-send",
        &structured_input("eth_sendRawTransaction", &[&[13, 0, 0]]),
    );
    write(
        "json_rpc",
        "structured-create",
        &structured_input("eth_sendRawTransaction", &[&[13, 0, 1]]),
    );
    write(
        "json_rpc",
        "structured-balance",
        &structured_input("eth_getBalance", &[&[0, 1], &[1, 0]]),
    );
    write(
        "json_rpc",
        "structured-call",
        &structured_input("eth_call", &[&[10, 0x0f, 0x00], &[1, 0]]),
    );
    write(
        "json_rpc",
        "structured-logs",
        &structured_input("eth_getLogs", &[&[10, 0x00, 0x1e]]),
    );
    write(
        "json_rpc",
        "structured-block",
        &structured_input("eth_getBlockByHash", &[&[5, 0], &[6, 1]]),
    );
}

/// The raft target's format gives every byte string a meaning: a few hand-made inputs (status,
/// client writes, a peer's append of each kind of entry, a vote, snapshots), then noise.
fn raft() {
    use parsec_fuzz::raft::input;
    write("raft", "leader-status", &input(true, &[4]));
    // A one-phase commit of key "a" through the log, then a commit of an unknown ticket.
    let one_phase = [9, 1, 0, 2, 1, 1, 0, b'a', 1, 0, b'1'];
    write(
        "raft",
        "leader-writes",
        &input(true, &[&one_phase[..], &[9, 2, 0, 1]].concat()),
    );
    // A peer in term 3 appends a blank entry, then a membership of voters {1, 2}.
    let append = [
        0, 3, 2, 1, 0, 1, 2, 3, 0, 0, 0, 3, 2, 0, 2, 1, 2, 1, 2, 2, 1, 2, 0,
    ];
    write("raft", "follower-append", &input(false, &append));
    write("raft", "leader-append-higher-term", &input(true, &append));
    // Votes for a candidate of a later term, with and without a log.
    write(
        "raft",
        "vote",
        &input(true, &[1, 5, 3, 0, 1, 4, 2, 9, 1, 6, 3, 0, 0]),
    );
    // A real snapshot of a few commands, in one chunk.
    let snapshot = [
        2, 4, 2, 1, 1, 3, 2, 7, 0, 1, 0, 1, 0, 0, 0, 1, 1, 2, 1, 1, 0, 1, 2, 0, 1,
    ];
    write("raft", "install-snapshot", &input(false, &snapshot));
    write(
        "raft",
        "admin",
        &input(true, &[5, 2, 7, 2, 6, 2, 1, 2, 8, 1, 4]),
    );
    for i in 0..12 {
        write(
            "raft",
            &format!("noise-{i:02}"),
            &noise(300 + i, 16 + 24 * i as usize),
        );
    }
}

fn main() {
    tx_decode();
    lua();
    lock_table();
    grpc();
    json_rpc();
    raft();
    println!("seeds written under {}", corpus("").display());
}
