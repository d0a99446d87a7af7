//! The Lua runner against an in-memory key store: the shipped contracts, the sandbox, the
//! resource limits and the yield/return protocol.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parsec_agent::lua::LuaRunner;
use parsec_agent::lua::contracts::{
    self, BALANCES, MINT, PAY, account_key, balances_param, decode_account, encode_account,
    mint_param, pay_param, pubkey,
};
use parsec_agent::runner::{AccessError, KeyAccess, RunError, RunOutput, Runner};
use parsec_core::{Key, LockMode, Value, WriteSet};
use secp256k1::{Keypair, SECP256K1};

const BUDGET: u64 = 1_000_000;
const MEMORY: usize = 8 << 20;

/// A key store that records every lock call and can refuse the `n`-th one.
#[derive(Default)]
struct FakeAccess {
    store: HashMap<Key, Value>,
    calls: Vec<(Vec<Key>, LockMode)>,
    fail_on_call: Option<(usize, AccessError)>,
}

impl FakeAccess {
    fn with(entries: impl IntoIterator<Item = (Key, Value)>) -> Self {
        FakeAccess {
            store: entries.into_iter().collect(),
            ..FakeAccess::default()
        }
    }

    fn failing_on(n: usize, error: AccessError) -> Self {
        FakeAccess {
            fail_on_call: Some((n, error)),
            ..FakeAccess::default()
        }
    }

    /// Commits a write-set, as the agent would after a successful call.
    fn apply(&mut self, writes: &WriteSet) {
        self.store.extend(writes.clone());
    }
}

#[async_trait]
impl KeyAccess for FakeAccess {
    async fn lock(&mut self, keys: Vec<Key>, mode: LockMode) -> Result<Vec<Value>, AccessError> {
        self.calls.push((keys.clone(), mode));
        if let Some((n, error)) = &self.fail_on_call
            && *n == self.calls.len()
        {
            return Err(error.clone());
        }
        Ok(keys
            .iter()
            .map(|key| self.store.get(key).cloned().unwrap_or_default())
            .collect())
    }
}

fn runner() -> LuaRunner {
    LuaRunner::new(BUDGET, MEMORY)
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_seckey_byte_array(SECP256K1, [seed; 32]).expect("valid secret key")
}

async fn run(
    runner: &LuaRunner,
    code: &str,
    param: impl Into<Bytes>,
    read_only: bool,
    access: &mut FakeAccess,
) -> Result<RunOutput, RunError> {
    let code = Bytes::from(code.to_owned());
    runner.run(&code, &param.into(), read_only, access).await
}

/// Runs a read-only snippet and returns its answer with string keys.
async fn answer(runner: &LuaRunner, code: &str) -> HashMap<String, String> {
    let output = run(runner, code, "", true, &mut FakeAccess::default())
        .await
        .unwrap_or_else(|e| panic!("{code}: {e}"));
    output
        .writes
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// Runs a contract that needs no parameter and no stored keys.
async fn snippet(runner: &LuaRunner, code: &str, read_only: bool) -> Result<RunOutput, RunError> {
    run(runner, code, "", read_only, &mut FakeAccess::default()).await
}

/// The message of a snippet that must fail with `ContractFailed`.
async fn failure(runner: &LuaRunner, code: &str, read_only: bool) -> String {
    contract_failed(snippet(runner, code, read_only).await)
}

fn contract_failed(result: Result<RunOutput, RunError>) -> String {
    match result {
        Err(RunError::ContractFailed(message)) => message,
        other => panic!("expected ContractFailed, got {other:?}"),
    }
}

fn account(pk: &[u8; 32], balance: u64, sequence: u64) -> (Key, Value) {
    (account_key(pk), encode_account(balance, sequence))
}

// ---------------------------------------------------------------------------------------------
// pay

#[tokio::test]
async fn pay_moves_funds_and_bumps_the_sequence() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0)]);

    let output = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 30, 0),
        false,
        &mut access,
    )
    .await
    .expect("valid payment");

    let expected: WriteSet = [account(&a, 70, 1), account(&b, 30, 0)]
        .into_iter()
        .collect();
    assert_eq!(output.writes, expected);
    assert_eq!(
        access.calls,
        vec![(vec![account_key(&a), account_key(&b)], LockMode::Write)],
        "both accounts in a single lock call"
    );
}

#[tokio::test]
async fn pay_keeps_the_recipient_sequence_and_accepts_sequence_gaps() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 5), account(&b, 7, 42)]);

    let output = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 100, 9),
        false,
        &mut access,
    )
    .await
    .expect("valid payment");

    let expected: WriteSet = [account(&a, 0, 10), account(&b, 107, 42)]
        .into_iter()
        .collect();
    assert_eq!(output.writes, expected);
}

#[tokio::test]
async fn successive_payments_need_fresh_sequences() {
    let runner = runner();
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0)]);
    let first = pay_param(&alice, &b, 10, 0);

    let output = run(&runner, PAY, first.clone(), false, &mut access)
        .await
        .expect("first payment");
    access.apply(&output.writes);
    let replay = run(&runner, PAY, first, false, &mut access).await;
    assert_eq!(contract_failed(replay), "stale sequence");

    let output = run(
        &runner,
        PAY,
        pay_param(&alice, &b, 10, 1),
        false,
        &mut access,
    )
    .await
    .expect("second payment");
    access.apply(&output.writes);
    assert_eq!(decode_account(&access.store[&account_key(&a)]), Ok((80, 2)));
    assert_eq!(decode_account(&access.store[&account_key(&b)]), Ok((20, 0)));
}

#[tokio::test]
async fn pay_rejects_a_bad_signature_before_locking() {
    let (alice, bob, mallory) = (keypair(1), keypair(2), keypair(3));
    let (a, b) = (pubkey(&alice), pubkey(&bob));

    // A signature bit flipped.
    let mut tampered = pay_param(&alice, &b, 30, 0).to_vec();
    tampered[100] ^= 1;
    // Mallory signs a payment out of Alice's account.
    let mut forged = pay_param(&mallory, &b, 30, 0).to_vec();
    forged[..32].copy_from_slice(&a);
    // The amount changed after signing.
    let mut altered = pay_param(&alice, &b, 30, 0).to_vec();
    altered[64] = 31;

    for param in [tampered, forged, altered] {
        let mut access = FakeAccess::with([account(&a, 100, 0)]);
        let result = run(&runner(), PAY, param, false, &mut access).await;
        assert_eq!(contract_failed(result), "bad signature");
        assert!(
            access.calls.is_empty(),
            "nothing locked for a forged payment"
        );
    }
}

#[tokio::test]
async fn pay_rejects_a_stale_sequence() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 5)]);
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 1, 4),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "stale sequence");
}

#[tokio::test]
async fn pay_rejects_insufficient_funds() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0)]);
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 101, 0),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "insufficient funds");

    // An absent account has nothing.
    let mut access = FakeAccess::default();
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 1, 0),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "insufficient funds");
}

#[tokio::test]
async fn pay_rejects_a_param_of_the_wrong_length() {
    let (alice, bob) = (keypair(1), keypair(2));
    let param = pay_param(&alice, &pubkey(&bob), 1, 0);
    for bad in [
        param.slice(..143),
        Bytes::from([&param[..], &[0]].concat()),
        Bytes::new(),
    ] {
        let mut access = FakeAccess::default();
        let message = contract_failed(run(&runner(), PAY, bad.clone(), false, &mut access).await);
        assert_eq!(
            message,
            format!("pay: param must be 144 bytes, got {} bytes", bad.len())
        );
        assert!(access.calls.is_empty());
    }
}

#[tokio::test]
async fn self_payment_locks_one_key_and_only_bumps_the_sequence() {
    let alice = keypair(1);
    let a = pubkey(&alice);
    let mut access = FakeAccess::with([account(&a, 100, 3)]);

    let output = run(
        &runner(),
        PAY,
        pay_param(&alice, &a, 40, 3),
        false,
        &mut access,
    )
    .await
    .expect("self payment");

    assert_eq!(
        output.writes,
        [account(&a, 100, 4)].into_iter().collect::<WriteSet>()
    );
    assert_eq!(access.calls, vec![(vec![account_key(&a)], LockMode::Write)]);
}

#[tokio::test]
async fn pay_handles_the_full_u64_range() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let value = (1u64 << 63) + 1; // negative as a Lua integer
    let mut access = FakeAccess::with([account(&a, u64::MAX, 1 << 63), account(&b, 5, 0)]);

    let output = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, value, 1 << 63),
        false,
        &mut access,
    )
    .await
    .expect("payment above 2^63");

    let expected: WriteSet = [
        account(&a, u64::MAX - value, (1 << 63) + 1),
        account(&b, value + 5, 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(output.writes, expected);
}

#[tokio::test]
async fn pay_rejects_an_overflowing_credit() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0), account(&b, u64::MAX - 5, 0)]);
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 10, 0),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "balance overflow");
}

#[tokio::test]
async fn pay_rejects_the_last_sequence() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0)]);
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 1, u64::MAX),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "sequence overflow");
}

#[tokio::test]
async fn pay_rejects_a_corrupt_account() {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([(account_key(&a), Bytes::from_static(b"short"))]);
    let result = run(
        &runner(),
        PAY,
        pay_param(&alice, &b, 1, 0),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "corrupt account record (5 bytes)");
}

// ---------------------------------------------------------------------------------------------
// mint and balances

#[tokio::test]
async fn mint_credits_every_account_in_one_lock_call() {
    let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
    let mut access = FakeAccess::with([account(&a, 10, 7)]);
    let param = mint_param(&[(a, 5), (b, 6), (c, 7), (b, 1)]);

    let output = run(&runner(), MINT, param, false, &mut access)
        .await
        .expect("mint");

    let expected: WriteSet = [account(&a, 15, 7), account(&b, 7, 0), account(&c, 7, 0)]
        .into_iter()
        .collect();
    assert_eq!(output.writes, expected);
    assert_eq!(
        access.calls,
        vec![(
            vec![account_key(&a), account_key(&b), account_key(&c)],
            LockMode::Write
        )]
    );
}

#[tokio::test]
async fn mint_of_a_full_batch_locks_every_account_in_one_request() {
    let credits: Vec<([u8; 32], u64)> = (0..256u32).map(|i| (key32(i), u64::from(i) + 1)).collect();
    let mut access = FakeAccess::default();

    let output = run(&runner(), MINT, mint_param(&credits), false, &mut access)
        .await
        .expect("mint 256");

    assert_eq!(output.writes.len(), 256);
    assert_eq!(access.calls.len(), 1);
    assert_eq!(access.calls[0].0.len(), 256);
    for (pk, amount) in credits {
        assert_eq!(
            decode_account(&output.writes[&account_key(&pk)]),
            Ok((amount, 0))
        );
    }
}

fn key32(i: u32) -> [u8; 32] {
    let mut key = [0; 32];
    key[..4].copy_from_slice(&i.to_le_bytes());
    key
}

#[tokio::test]
async fn mint_rejects_bad_params_and_overflow() {
    for bad in [
        Bytes::new(),
        Bytes::from(vec![0; 41]),
        mint_param(&vec![([1; 32], 1); 257]),
    ] {
        let message =
            contract_failed(run(&runner(), MINT, bad, false, &mut FakeAccess::default()).await);
        assert!(message.starts_with("mint: param must be"), "{message}");
    }
    let mut access = FakeAccess::with([account(&[1; 32], u64::MAX, 0)]);
    let result = run(
        &runner(),
        MINT,
        mint_param(&[([1; 32], 1)]),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "balance overflow");
    let result = run(
        &runner(),
        MINT,
        mint_param(&[([2; 32], u64::MAX), ([2; 32], 1)]),
        false,
        &mut access,
    )
    .await;
    assert_eq!(contract_failed(result), "mint: amount overflow");
}

#[tokio::test]
async fn balances_reads_accounts_with_read_locks() {
    let (a, b) = ([1; 32], [2; 32]);
    let mut access = FakeAccess::with([account(&a, 42, 3)]);

    let output = run(
        &runner(),
        BALANCES,
        balances_param(&[a, b]),
        true,
        &mut access,
    )
    .await
    .expect("balances");

    let expected: WriteSet = [account(&a, 42, 3), (account_key(&b), Bytes::new())]
        .into_iter()
        .collect();
    assert_eq!(output.writes, expected);
    assert_eq!(
        access.calls,
        vec![(vec![account_key(&a), account_key(&b)], LockMode::Read)]
    );
}

#[tokio::test]
async fn balances_rejects_bad_params() {
    for bad in [
        Bytes::new(),
        Bytes::from(vec![0; 33]),
        balances_param(&vec![[1; 32]; 257]),
    ] {
        let message =
            contract_failed(run(&runner(), BALANCES, bad, true, &mut FakeAccess::default()).await);
        assert!(message.starts_with("balances: param must be"), "{message}");
    }
}

#[tokio::test]
async fn shipped_contracts_validate() {
    let runner = runner();
    for code in [PAY, MINT, BALANCES] {
        runner
            .validate(code.as_bytes())
            .expect("shipped contract compiles");
    }
    assert_eq!(runner.name(), "lua");
    assert_eq!(contracts::PAY_PARAM_LEN, 144);
}

// ---------------------------------------------------------------------------------------------
// sandbox

#[tokio::test]
async fn forbidden_globals_are_absent() {
    let runner = runner();
    for name in [
        "io",
        "os",
        "package",
        "require",
        "debug",
        "load",
        "loadstring",
        "loadfile",
        "dofile",
        "collectgarbage",
        "print",
        "pcall",
        "xpcall",
        "_G",
        "string.dump",
        "math.random",
        "math.randomseed",
        "coroutine.create",
        "coroutine.resume",
        "coroutine.wrap",
        "coroutine.status",
        "coroutine.isyieldable",
        "coroutine.close",
        "coroutine.running",
        "string.match",
        "string.gmatch",
        "string.gsub",
    ] {
        let code = format!("return {{ t = type({name}) }}");
        assert_eq!(
            answer(&runner, &code).await["t"],
            "nil",
            "{name} must not be available"
        );
    }
}

#[tokio::test]
async fn find_is_plain_text_and_bounded() {
    let runner = runner();
    // Magic characters are literal: no pattern engine, so no exponential backtracking.
    let found = answer(
        &runner,
        "return { a = tostring(string.find('x.y', '.', 1)), b = tostring(('a%d'):find('%d')) }",
    )
    .await;
    assert_eq!((found["a"].as_str(), found["b"].as_str()), ("2", "2"));
    let message = failure(&runner, "string.find('abc', string.rep('a', 65))", false).await;
    assert!(message.contains("limited to 64 bytes"), "{message}");
}

#[tokio::test]
async fn allowed_globals_are_present() {
    let runner = runner();
    for name in [
        "assert",
        "error",
        "ipairs",
        "next",
        "pairs",
        "select",
        "tonumber",
        "tostring",
        "type",
        "rawequal",
        "rawget",
        "rawlen",
        "rawset",
        "setmetatable",
        "getmetatable",
        "string.format",
        "string.pack",
        "table.concat",
        "table.insert",
        "math.ult",
        "utf8.char",
        "coroutine.yield",
        "sha256",
        "verify_schnorr",
    ] {
        let code = format!("return {{ t = type({name}) }}");
        assert_eq!(
            answer(&runner, &code).await["t"],
            "function",
            "{name} must be available"
        );
    }
}

#[tokio::test]
async fn library_tables_are_read_only() {
    let runner = runner();
    for code in [
        "string.x = 1",
        "math.ult = nil",
        "table.insert = print",
        "coroutine.wrap = 1",
    ] {
        let message = failure(&runner, code, true).await;
        assert!(message.contains("read-only"), "{code}: {message}");
    }
    let message = failure(&runner, "setmetatable(string, {})", true).await;
    assert!(message.contains("protected metatable"), "{message}");
}

#[tokio::test]
async fn the_string_metatable_is_protected() {
    let runner = runner();
    let answer = answer(
        &runner,
        r#"return { mt = tostring(getmetatable("")), env = tostring(getmetatable(_ENV)),
                    lib = tostring(getmetatable(string)) }"#,
    )
    .await;
    assert_eq!(answer["mt"], "false");
    assert_eq!(answer["env"], "false");
    assert_eq!(answer["lib"], "false");
}

#[tokio::test]
async fn nothing_survives_from_one_call_to_the_next() {
    let runner = runner(); // calls are sequential: they share one pooled VM
    let code = r#"
        local p = ...
        local tostring, rawset = tostring, rawset
        if p == "poison" then
            leaked = "global"
            rawset(string, "leaked", "rawset")
            rawset(coroutine, "wrap", "rawset")
            _ENV = { leaked = "env" }
            return {}
        end
        return { g = tostring(leaked), s = tostring(string.leaked), w = tostring(coroutine.wrap) }
    "#;
    for _ in 0..2 {
        run(&runner, code, "poison", true, &mut FakeAccess::default())
            .await
            .expect("poison");
        let output = run(&runner, code, "check", true, &mut FakeAccess::default())
            .await
            .expect("check");
        for field in ["g", "s", "w"] {
            assert_eq!(
                output.writes[field.as_bytes()],
                "nil",
                "{field} leaked into the next call"
            );
        }
    }
}

#[tokio::test]
async fn finalizers_and_weak_tables_are_refused() {
    let runner = runner();
    for code in [
        "setmetatable({}, { __gc = function() end })",
        "setmetatable({}, { __mode = 'k' })",
    ] {
        let message = failure(&runner, code, true).await;
        assert!(message.contains("__gc and __mode"), "{message}");
    }
}

#[tokio::test]
async fn builtins_hash_and_verify() {
    let runner = runner();
    let alice = keypair(1);
    let msg = [7u8; 32];
    let sig = alice.sign_schnorr(&msg).to_byte_array();
    let param = [&pubkey(&alice)[..], &sig, &msg].concat();
    let code = r#"
        local p = ...
        local pk, sig, msg = p:sub(1, 32), p:sub(33, 96), p:sub(97, 128)
        local function b(x) return tostring(x) end
        return {
            hash = sha256("abc"),
            good = b(verify_schnorr(pk, sig, msg)),
            wrong_msg = b(verify_schnorr(pk, sig, sha256("other"))),
            short_msg = b(verify_schnorr(pk, sig, "abc")),
            short_sig = b(verify_schnorr(pk, sig:sub(2), msg)),
            bad_key = b(verify_schnorr(string.rep("\255", 32), sig, msg)),
            not_strings = b(verify_schnorr(1, {}, nil)),
        }
    "#;
    let output = run(&runner, code, param, true, &mut FakeAccess::default())
        .await
        .expect("builtins");
    let field = |name: &str| output.writes[name.as_bytes()].clone();
    let expected_hash: [u8; 32] = [
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22,
        0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00,
        0x15, 0xad,
    ];
    assert_eq!(field("hash"), &expected_hash[..]);
    assert_eq!(field("good"), "true");
    for name in [
        "wrong_msg",
        "short_msg",
        "short_sig",
        "bad_key",
        "not_strings",
    ] {
        assert_eq!(field(name), "false", "{name}");
    }
}

#[tokio::test]
async fn patched_library_functions_behave_like_the_originals() {
    let runner = runner();
    let answer = answer(
        &runner,
        r#"
        local t = { 1, 2, 3 }
        table.insert(t, 4)
        table.insert(t, 1, 0)
        local removed = table.remove(t, 2)
        local last = table.remove(t)
        table.move(t, 1, 3, 2)
        local copy = table.move(t, 1, #t, 1, {})
        return {
            t = table.concat(t, ","), removed = tostring(removed), last = tostring(last),
            copy = table.concat(copy, ","), rep = ("ab"):rep(3, "-"), empty = string.rep("", 1e18),
        }
        "#,
    )
    .await;
    assert_eq!(answer["t"], "0,0,2,3");
    assert_eq!(answer["removed"], "1");
    assert_eq!(answer["last"], "4");
    assert_eq!(answer["copy"], "0,0,2,3");
    assert_eq!(answer["rep"], "ab-ab-ab");
    assert_eq!(answer["empty"], "");

    let message = failure(&runner, "table.insert({}, 5, 1)", true).await;
    assert!(message.contains("position out of bounds"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// limits

/// After a call that hit a limit, the same runner still runs a payment.
async fn assert_still_pays(runner: &LuaRunner) {
    let (alice, bob) = (keypair(1), keypair(2));
    let (a, b) = (pubkey(&alice), pubkey(&bob));
    let mut access = FakeAccess::with([account(&a, 100, 0)]);
    let output = run(runner, PAY, pay_param(&alice, &b, 1, 0), false, &mut access)
        .await
        .expect("payment after a limit error");
    assert_eq!(output.writes.len(), 2);
}

#[tokio::test]
async fn an_endless_loop_exhausts_the_budget() {
    let runner = runner();
    for code in [
        "while true do end",
        "local function f() return f() end return f()",
        // __len makes the C table.insert loop for ever; ours is metered.
        "table.insert(setmetatable({}, { __len = function() return 1 << 60 end }), 1, 'x')",
        "table.move({}, 1, 1 << 60, 2)",
        // The error object's __tostring runs while the runner formats the error.
        "error(setmetatable({}, { __tostring = function() while true do end end }))",
        "do local x <close> = setmetatable({}, { __close = function() while true do end end }) end",
    ] {
        let result = snippet(&runner, code, false).await;
        assert_eq!(
            result,
            Err(RunError::InstructionBudgetExceeded(BUDGET)),
            "{code}"
        );
        assert_still_pays(&runner).await;
    }
}

#[tokio::test]
async fn the_budget_is_per_call() {
    // Each call runs about 600k instructions: fine alone, over budget if counts accumulated.
    let runner = runner();
    let code = "local x = 0 for i = 1, 200000 do x = x + i end return { x = tostring(x) }";
    for _ in 0..3 {
        snippet(&runner, code, true).await.expect("within budget");
    }
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_limit() {
    let runner = runner();
    let code = r#"local t = {} while true do t[#t + 1] = string.rep("x", 1e6) end"#;
    for _ in 0..3 {
        let result = snippet(&runner, code, false).await;
        assert_eq!(result, Err(RunError::MemoryLimitExceeded(MEMORY)));
        assert_still_pays(&runner).await;
    }
}

#[tokio::test]
async fn a_huge_string_is_refused_without_crashing() {
    let runner = runner();
    for code in [
        r#"return { x = string.rep("x", 1e12) }"#,
        r#"return { x = ("x"):rep(1 << 62) }"#,
        r#"local s = "x" while true do s = s .. s end"#,
        r#"return { x = sha256(string.rep("x", 7e6) .. string.rep("y", 7e6)) }"#,
    ] {
        let result = snippet(&runner, code, false).await;
        assert!(
            matches!(
                result,
                Err(RunError::MemoryLimitExceeded(_) | RunError::ContractFailed(_))
            ),
            "{code}: {result:?}"
        );
        assert_still_pays(&runner).await;
    }
}

// ---------------------------------------------------------------------------------------------
// the yield / return protocol

#[tokio::test]
async fn bad_yields_fail_with_clear_messages() {
    let runner = runner();
    let long = format!("coroutine.yield(string.rep('k', {}))", 1025);
    let cases = [
        (
            "coroutine.yield(42)",
            "yield #1: key #1: expected a key string, got integer",
        ),
        (
            "coroutine.yield({})",
            "yield #1: key #1: expected a key string, got table",
        ),
        (
            "coroutine.yield()",
            "yield #1: expected 1 to 256 key strings, got nothing",
        ),
        (
            "coroutine.yield('')",
            "yield #1: key #1: expected a key string, got an empty string",
        ),
        (
            "coroutine.yield('a') coroutine.yield('b', {})",
            "yield #2: key #2: expected a key string, got table",
        ),
        (
            &long,
            "yield #1: key #1: key is 1025 bytes, the limit is 1024",
        ),
    ];
    for (code, expected) in cases {
        let message = failure(&runner, code, false).await;
        assert_eq!(message, expected, "{code}");
    }
    // 257 keys: more than a literal call can pass (255 registers), so unpack a table.
    let code =
        "local t = {} for i = 1, 257 do t[i] = 'k' .. i end coroutine.yield(table.unpack(t))";
    let message = failure(&runner, code, false).await;
    assert_eq!(message, "yield #1: expected at most 256 keys, got 257");

    let keys = (1..=64)
        .map(|i| format!("'k{i}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let code = format!("coroutine.yield({keys}) return {{}}");
    let output = snippet(&runner, &code, false).await;
    assert_eq!(output, Ok(RunOutput::default()), "64 keys are fine");
}

#[tokio::test]
async fn writes_must_target_locked_keys() {
    let runner = runner();
    let code = r#"
        local a = coroutine.yield("a")
        local b, c = coroutine.yield("b", "c")
        return { a = a .. "1", c = c .. "3", [...] = "x" }
    "#;
    let mut access = FakeAccess::with([(Bytes::from_static(b"a"), Bytes::from_static(b"A"))]);
    let output = run(&runner, code, "b", false, &mut access)
        .await
        .expect("locked keys");
    let expected: WriteSet = [
        (Bytes::from_static(b"a"), Bytes::from_static(b"A1")),
        (Bytes::from_static(b"b"), Bytes::from_static(b"x")),
        (Bytes::from_static(b"c"), Bytes::from_static(b"3")),
    ]
    .into_iter()
    .collect();
    assert_eq!(output.writes, expected);
    assert_eq!(access.calls.len(), 2);

    let message = contract_failed(run(&runner, code, "z", false, &mut FakeAccess::default()).await);
    assert_eq!(message, r#"wrote key "z" that it never locked"#);
    let message = failure(&runner, "return { ['\\0\\1'] = 'x' }", false).await;
    assert_eq!(message, "wrote key 0x0001 that it never locked");

    // A read-only call returns an answer: any key goes, nothing is locked.
    let output = snippet(&runner, "return { z = 'answer' }", true).await;
    assert!(output.is_ok());
}

#[tokio::test]
async fn the_result_must_be_one_table_of_strings() {
    let runner = runner();
    let cases = [
        (
            "return 42",
            "must return a table of key/value strings, got integer",
        ),
        (
            "return 'x'",
            "must return a table of key/value strings, got string",
        ),
        (
            "return",
            "must return a table of key/value strings, got nothing",
        ),
        (
            "local x = 1",
            "must return a table of key/value strings, got nothing",
        ),
        (
            "return {}, {}",
            "must return exactly one table, got 2 values",
        ),
        (
            "return { [1] = 'x' }",
            "returned a key of type integer, keys must be strings",
        ),
        (
            "return { a = 1 }",
            r#"returned a value of type integer for key "a", values must be strings"#,
        ),
        (
            "return { a = {} }",
            r#"returned a value of type table for key "a", values must be strings"#,
        ),
        (
            "return { a = string.rep('x', 65537) }",
            r#"value for key "a" is 65537 bytes, the limit is 65536"#,
        ),
        (
            "local t = {} for i = 1, 1025 do t['k' .. i] = '' end return t",
            "returned more than 1024 entries",
        ),
    ];
    for (code, expected) in cases {
        let message = failure(&runner, code, true).await;
        assert_eq!(message, expected, "{code}");
    }
}

#[tokio::test]
async fn runtime_errors_carry_the_lua_message() {
    let runner = runner();
    let message = failure(&runner, "error('boom')", false).await;
    assert_eq!(message, "contract:1: boom");
    let message = failure(&runner, "local t = nil\nreturn t.x", false).await;
    assert!(
        message.starts_with("contract:2: attempt to index a nil value"),
        "{message}"
    );
    // A failed contract is dead: its to-be-closed variables never run.
    let code = "local x <close> = setmetatable({}, { __close = function() while true do end end })
                error('boom', 0)";
    assert_eq!(failure(&runner, code, false).await, "boom");
    let message = failure(&runner, "sha256({})", false).await;
    assert_eq!(
        message,
        "bad argument #1 to 'sha256' (string expected, got table)"
    );
}

// ---------------------------------------------------------------------------------------------
// access errors

#[tokio::test]
async fn a_refused_lock_stops_the_contract() {
    let runner = runner();
    let code = r#"
        coroutine.yield("a")
        coroutine.yield("b")
        error("resumed after a refused lock")
    "#;
    for (n, error) in [
        (1, AccessError::Wounded),
        (2, AccessError::Wounded),
        (1, AccessError::Aborted("shard unreachable".to_owned())),
        (2, AccessError::Invalid("too many keys".to_owned())),
    ] {
        let mut access = FakeAccess::failing_on(n, error.clone());
        let result = run(&runner, code, "", false, &mut access).await;
        assert_eq!(result, Err(RunError::Access(error)));
        assert_eq!(access.calls.len(), n);
    }
    assert_still_pays(&runner).await;
}

// ---------------------------------------------------------------------------------------------
// what is a contract

#[tokio::test]
async fn binary_chunks_are_refused() {
    let runner = runner();
    let bytecode = mlua::Lua::new()
        .load("return {}")
        .into_function()
        .expect("compiles")
        .dump(false);
    assert!(bytecode.starts_with(b"\x1bLua"));
    let code = Bytes::from(bytecode);
    assert!(matches!(
        runner.validate(&code),
        Err(RunError::InvalidContract(_))
    ));
    let result = runner
        .run(&code, &Bytes::new(), false, &mut FakeAccess::default())
        .await;
    assert!(
        matches!(result, Err(RunError::InvalidContract(_))),
        "{result:?}"
    );
    assert!(matches!(
        runner.validate(b"\x1bLua garbage"),
        Err(RunError::InvalidContract(_))
    ));
}

#[tokio::test]
async fn malformed_source_is_refused_with_the_lua_message() {
    let runner = runner();
    match runner.validate(b"return {") {
        Err(RunError::InvalidContract(message)) => {
            assert!(
                message.starts_with("contract:1:") && message.contains("expected"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let result = snippet(&runner, "local = 1", false).await;
    assert!(
        matches!(result, Err(RunError::InvalidContract(ref m)) if m.contains("contract:1:")),
        "{result:?}"
    );
    assert!(matches!(
        runner.validate(b""),
        Err(RunError::InvalidContract(_))
    ));
    assert!(matches!(
        runner.validate(b"return '\xff'"),
        Err(RunError::InvalidContract(_))
    ));
    // Validation compiles without running.
    assert_eq!(runner.validate(b"while true do end"), Ok(()));
}

// ---------------------------------------------------------------------------------------------
// concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_share_the_runner() {
    let runner = Arc::new(runner());
    let tasks: Vec<_> = (0..8u8)
        .map(|i| {
            let runner = Arc::clone(&runner);
            tokio::spawn(async move {
                let (from, to) = (keypair(10 + i), keypair(100 + i));
                let (f, t) = (pubkey(&from), pubkey(&to));
                let mut access = FakeAccess::with([account(&f, 1000, 0)]);
                for sequence in 0..25 {
                    let output = run(
                        &runner,
                        PAY,
                        pay_param(&from, &t, 10, sequence),
                        false,
                        &mut access,
                    )
                    .await
                    .expect("payment");
                    access.apply(&output.writes);
                    tokio::task::yield_now().await;
                }
                assert_eq!(
                    decode_account(&access.store[&account_key(&f)]),
                    Ok((750, 25))
                );
                assert_eq!(
                    decode_account(&access.store[&account_key(&t)]),
                    Ok((250, 0))
                );
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}
