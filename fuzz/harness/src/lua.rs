//! Lua contract loading and execution through the real [`LuaRunner`]: its sandbox, instruction
//! budget and memory cap, with a key store the fuzzer controls.
//!
//! Two modes, by the first byte:
//! - anything but `0x00`: the bytes are the contract's source, run with an empty parameter
//!   (the corpus holds the shipped contracts and the tests' snippets);
//! - `0x00`: the rest is structured: source text, parameter, read-only flag, the values the key
//!   store answers, and a lock call on which it refuses.
//!
//! Oracles: every outcome is a result or a clear error, never an internal one; deploy-time
//! validation and the call agree on what compiles; a refused lock ends the call at once with
//! that refusal; what a call returns obeys the protocol (written keys were locked, sizes within
//! bounds); the call ends in bounded time. After every call a canary contract runs on the same
//! pooled VM and checks that the sandbox is intact: nothing dangerous reachable (io, os, load,
//! require, debug, string.dump, pcall, coroutine.resume, …), library tables empty and
//! protected, the patched library functions still the safe ones.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use parsec_agent::lua::{
    LuaRunner, MAX_KEY_LEN, MAX_KEYS_PER_YIELD, MAX_OUTPUT_ENTRIES, MAX_VALUE_LEN,
};
use parsec_agent::runner::{AccessError, KeyAccess, RunError, RunOutput, Runner};
use parsec_core::{Key, LockMode, Value};

use crate::wire::{Reader, Writer};

/// Smaller than production's, so that runaway contracts end quickly; the mechanisms are the
/// same.
pub const INSTRUCTION_BUDGET: u64 = 200_000;
pub const MEMORY_LIMIT: usize = 4 << 20;
/// No call may take longer, whatever the contract does (generous: sanitizers slow Lua down
/// tenfold, and the machine is shared).
const MAX_CALL_TIME: Duration = Duration::from_secs(20);

/// The first byte that selects the structured mode.
pub const STRUCTURED: u8 = 0x00;

fn runner() -> &'static LuaRunner {
    static RUNNER: OnceLock<LuaRunner> = OnceLock::new();
    RUNNER.get_or_init(|| LuaRunner::new(INSTRUCTION_BUDGET, MEMORY_LIMIT))
}

#[derive(Debug, Default)]
struct Call {
    source: String,
    param: Vec<u8>,
    read_only: bool,
    /// The values the store answers, in turn.
    values: Vec<Vec<u8>>,
    /// The lock call (1-based) that the store refuses, and how.
    refuse: Option<(u8, AccessError)>,
}

impl Call {
    /// The structured form: flags (bit 0 read-only, bits 1-2 the refusal kind, none if 0),
    /// the refused call's number, source, parameter, then store values to the end.
    fn read(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let flags = r.u8();
        let refused_call = r.u8();
        let refusal = match (flags >> 1) & 3 {
            0 => None,
            1 => Some(AccessError::Wounded),
            2 => Some(AccessError::Aborted("shard unreachable".into())),
            _ => Some(AccessError::Invalid("too many keys".into())),
        };
        let source = r.string();
        let param = r.bytes().to_vec();
        let mut values = Vec::new();
        while !r.is_empty() {
            values.push(r.bytes().to_vec());
        }
        Call {
            source,
            param,
            read_only: flags & 1 == 1,
            values,
            refuse: refusal.map(|e| (refused_call, e)),
        }
    }
}

/// The structured input for `source` (for the seed corpus).
pub fn structured_input(source: &str, param: &[u8], read_only: bool, values: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(STRUCTURED)
        .u8(u8::from(read_only))
        .u8(0)
        .bytes(source.as_bytes())
        .bytes(param);
    for value in values {
        w.bytes(value);
    }
    w.finish()
}

/// A key store that answers from the fuzzer's values and records every lock call.
struct Store<'a> {
    call: &'a Call,
    answered: usize,
    calls: Vec<(Vec<Key>, LockMode)>,
    refused: Option<AccessError>,
}

#[async_trait]
impl KeyAccess for Store<'_> {
    async fn lock(&mut self, keys: Vec<Key>, mode: LockMode) -> Result<Vec<Value>, AccessError> {
        assert!(
            self.refused.is_none(),
            "the runner asked for keys after a refused lock"
        );
        self.calls.push((keys.clone(), mode));
        if let Some((n, error)) = &self.call.refuse
            && usize::from(*n) == self.calls.len()
        {
            let error = error.clone();
            self.refused = Some(error.clone());
            return Err(error);
        }
        let values = &self.call.values;
        Ok(keys
            .iter()
            .map(|_| {
                self.answered += 1;
                match values.len() {
                    0 => Value::new(),
                    n => Value::copy_from_slice(&values[self.answered % n]),
                }
            })
            .collect())
    }
}

pub fn run(data: &[u8]) {
    let call = match data.split_first() {
        Some((&STRUCTURED, rest)) => Call::read(rest),
        _ => match std::str::from_utf8(data) {
            Ok(source) => Call {
                source: source.to_owned(),
                ..Call::default()
            },
            // Not UTF-8: still goes through validation, which must refuse it cleanly.
            Err(_) => {
                let refused = runner().validate(data);
                assert!(
                    matches!(refused, Err(RunError::InvalidContract(_))),
                    "{refused:?}"
                );
                return;
            }
        },
    };
    crate::runtime().block_on(check_call(&call));
}

async fn check_call(call: &Call) {
    let runner = runner();
    let code = Value::copy_from_slice(call.source.as_bytes());
    let validated = runner.validate(&code);
    let mut store = Store {
        call,
        answered: 0,
        calls: Vec::new(),
        refused: None,
    };
    let started = Instant::now();
    let result = runner
        .run(
            &code,
            &Bytes::copy_from_slice(&call.param),
            call.read_only,
            &mut store,
        )
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed < MAX_CALL_TIME, "a call ran for {elapsed:?}");
    check_outcome(call, &validated, &result, &store);
    check_sandbox_intact().await;
}

fn check_outcome(
    call: &Call,
    validated: &Result<(), RunError>,
    result: &Result<RunOutput, RunError>,
    store: &Store<'_>,
) {
    if let Err(error) = result {
        assert!(!error.to_string().is_empty());
    }
    match (validated, result) {
        (Err(RunError::InvalidContract(_)), Err(RunError::InvalidContract(_))) => {}
        (Err(RunError::InvalidContract(v)), other) => {
            panic!("deploy refused it ({v}) but the call gave {other:?}")
        }
        (_, Err(RunError::InvalidContract(r))) if validated.is_ok() => {
            panic!("deploy accepted it but the call refused it: {r}")
        }
        _ => {}
    }
    if let Err(RunError::Internal(message)) = validated {
        panic!("validation failed internally: {message}");
    }
    match result {
        Err(RunError::Internal(message)) => panic!("internal runner error: {message}"),
        Err(RunError::Access(error)) => {
            assert_eq!(
                Some(error),
                store.refused.as_ref(),
                "an access error nobody raised"
            )
        }
        _ => assert!(
            store.refused.is_none(),
            "the call went on after a refused lock: {result:?}"
        ),
    }
    let mode = if call.read_only {
        LockMode::Read
    } else {
        LockMode::Write
    };
    for (keys, asked) in &store.calls {
        assert_eq!(*asked, mode, "a lock in the wrong mode");
        assert!(!keys.is_empty() && keys.len() <= MAX_KEYS_PER_YIELD);
        assert!(keys.iter().all(|k| !k.is_empty() && k.len() <= MAX_KEY_LEN));
    }
    if let Ok(output) = result {
        assert!(output.writes.len() <= MAX_OUTPUT_ENTRIES);
        for (key, value) in &output.writes {
            assert!(value.len() <= MAX_VALUE_LEN);
            if !call.read_only {
                assert!(
                    store.calls.iter().any(|(keys, _)| keys.contains(key)),
                    "wrote {key:?} without locking it"
                );
            }
        }
    }
}

/// Runs on the VM the previous call used (calls are sequential, so the pool hands the same VM
/// back unless that call hit a limit) and lists whatever is not as the sandbox left it.
const CANARY: &str = r#"
local bad = {}
local function absent(name, value)
  if value ~= nil then bad[#bad + 1] = name end
end
absent("io", io) absent("os", os) absent("package", package) absent("require", require)
absent("debug", debug) absent("load", load) absent("loadstring", loadstring)
absent("loadfile", loadfile) absent("dofile", dofile) absent("collectgarbage", collectgarbage)
absent("print", print) absent("pcall", pcall) absent("xpcall", xpcall) absent("_G", _G)
absent("string.dump", string.dump) absent("string.match", string.match)
absent("string.gmatch", string.gmatch) absent("string.gsub", string.gsub)
absent("math.random", math.random) absent("math.randomseed", math.randomseed)
absent("coroutine.create", coroutine.create) absent("coroutine.resume", coroutine.resume)
absent("coroutine.wrap", coroutine.wrap) absent("coroutine.status", coroutine.status)
absent("coroutine.running", coroutine.running) absent("coroutine.close", coroutine.close)
absent("coroutine.isyieldable", coroutine.isyieldable)
absent("a global left behind", next(_ENV))
for name, lib in pairs({ string = string, table = table, math = math, utf8 = utf8, coroutine = coroutine }) do
  if next(lib) ~= nil then bad[#bad + 1] = name .. " proxy not empty" end
  if getmetatable(lib) ~= false then bad[#bad + 1] = name .. " metatable exposed" end
end
if getmetatable("") ~= false then bad[#bad + 1] = "string metatable exposed" end
if getmetatable(_ENV) ~= false then bad[#bad + 1] = "environment metatable exposed" end
if string.rep("", 1e15) ~= "" then bad[#bad + 1] = "string.rep" end
if ("ab"):rep(2, ",") ~= "ab,ab" then bad[#bad + 1] = "string.rep with sep" end
if string.find("x.y", ".", 1) ~= 2 then bad[#bad + 1] = "string.find not plain" end
if string.format("%d-%s", 7, "x") ~= "7-x" then bad[#bad + 1] = "string.format" end
local t = { 1, 2, 3 }
table.insert(t, 1, 0)
if table.concat(t, ",") ~= "0,1,2,3" or table.remove(t) ~= 3 then bad[#bad + 1] = "table" end
if type(sha256) ~= "function" or #sha256("") ~= 32 then bad[#bad + 1] = "sha256" end
if math.max(1, 2) ~= 2 or math.type(1) ~= "integer" then bad[#bad + 1] = "math" end
return { ok = (#bad == 0) and "yes" or table.concat(bad, "; ") }
"#;

async fn check_sandbox_intact() {
    let output = runner()
        .run(
            &Value::from_static(CANARY.as_bytes()),
            &Bytes::new(),
            true,
            &mut Store {
                call: &Call::default(),
                answered: 0,
                calls: Vec::new(),
                refused: None,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("the canary contract failed: {e}"));
    let ok = output
        .writes
        .get(b"ok".as_slice())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        ok,
        Bytes::from_static(b"yes"),
        "the sandbox was changed by the previous call: {}",
        String::from_utf8_lossy(&ok)
    );
}
