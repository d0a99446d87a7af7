//! One sandboxed Lua state, reused call after call: its sandbox, its resource limits and its
//! cache of compiled contracts.
//!
//! Isolation between calls on the same VM rests on three things: the library tables contracts
//! see are read-only proxies (scrubbed after each call, since `rawset` bypasses `__newindex`),
//! the string metatable is protected, and every call runs with an empty globals table whose
//! metatable (protected too) falls back to the sandbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, Lua, LuaOptions, StdLib, Table, VmState};

use super::builtins;
use crate::runner::RunError;

/// Builds the sandbox; see the file for what contracts get.
const SANDBOX_PRELUDE: &str = include_str!("sandbox.lua");

/// The base library is always loaded; these are the others the prelude needs.
fn libs() -> StdLib {
    StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE
}

/// The hook runs every this many instructions (fewer if the budget is smaller): often enough
/// to stop a runaway contract promptly, rarely enough to cost nothing measurable.
const HOOK_STEP: u64 = 1000;

/// Compiled contracts kept per VM. Contracts are few and hot (pay, mint, …), so a small
/// cache hits almost always while bounding what an attacker deploying many contracts can pin.
const MAX_CACHED_CONTRACTS: usize = 64;

/// Longest Lua error message passed on; a contract can raise arbitrarily long ones.
const MAX_MESSAGE_LEN: usize = 1024;

/// Per-call resource limits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub instruction_budget: u64,
    pub memory_limit: usize,
}

/// Instruction accounting for the call running on a VM. The hook closure must be
/// `Send + 'static`, hence an `Arc` of atomics; a VM is used by one call at a time, so relaxed
/// ordering is enough (handing a VM between threads goes through the pool's mutex).
struct Meter {
    budget: u64,
    step: u64,
    used: AtomicU64,
    exceeded: AtomicBool,
}

impl Meter {
    fn new(budget: u64) -> Self {
        Meter {
            budget,
            step: budget.clamp(1, HOOK_STEP),
            used: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
        }
    }

    fn reset(&self) {
        self.used.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
    }

    /// Called by the hook every `step` instructions. The error unwinds the contract; since
    /// contracts cannot catch errors, it reaches the runner, which trusts the flag rather than
    /// the error value.
    fn tick(&self) -> mlua::Result<VmState> {
        let used = self.used.fetch_add(self.step, Ordering::Relaxed) + self.step;
        if used > self.budget {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(mlua::Error::runtime("instruction budget exceeded"));
        }
        Ok(VmState::Continue)
    }

    fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// A compiled contract and the globals table it runs with.
struct CachedContract {
    function: Function,
    env: Table,
    last_used: u64,
}

pub(super) struct Vm {
    lua: Lua,
    limits: Limits,
    meter: Arc<Meter>,
    /// Metatable of every contract environment: `{ __index = sandbox, __metatable = false }`.
    env_meta: Table,
    /// The read-only library tables contracts see, which must stay empty.
    proxies: Vec<Table>,
    cache: HashMap<[u8; 32], CachedContract>,
    /// Logical clock for least-recently-used eviction from `cache`.
    clock: u64,
}

impl Vm {
    pub(super) fn new(limits: Limits) -> mlua::Result<Self> {
        let lua = Lua::new_with(libs(), LuaOptions::new())?;
        let (env_meta, proxies): (Table, Vec<Table>) = lua
            .load(SANDBOX_PRELUDE)
            .set_name("=sandbox")
            .set_mode(ChunkMode::Text)
            .call(builtins::create(&lua)?)?;
        let meter = Arc::new(Meter::new(limits.instruction_budget));
        let hook_meter = Arc::clone(&meter);
        // A global hook covers the main state too: Lua code of a contract can run there, e.g.
        // the `__tostring` of an error object while the runner formats the error.
        lua.set_global_hook(
            HookTriggers::new()
                .every_nth_instruction(u32::try_from(meter.step).unwrap_or(u32::MAX)),
            move |_, _| hook_meter.tick(),
        )?;
        Ok(Vm {
            lua,
            limits,
            meter,
            env_meta,
            proxies,
            cache: HashMap::new(),
            clock: 0,
        })
    }

    pub(super) fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Starts a call: a fresh instruction count and a memory cap of `memory_limit` bytes above
    /// what the VM holds now (garbage from earlier calls included: Lua collects it in an
    /// emergency collection before it reports an allocation failure).
    pub(super) fn begin_call(&self) -> Result<(), RunError> {
        self.meter.reset();
        let cap = self
            .lua
            .used_memory()
            .saturating_add(self.limits.memory_limit);
        self.lua
            .set_memory_limit(cap)
            .map_err(|e| self.host_error(e))?;
        Ok(())
    }

    /// Ends a call (whatever its outcome): lifts the memory cap and removes whatever the
    /// contract stored in the library proxies. An error means the VM must not be reused.
    pub(super) fn end_call(&mut self) -> mlua::Result<()> {
        self.lua.set_memory_limit(0)?;
        for proxy in &self.proxies {
            if !proxy.is_empty() {
                proxy.clear()?;
            }
        }
        Ok(())
    }

    /// Compiles `code` without running it or caching it.
    pub(super) fn compile(&self, code: &str) -> Result<Function, RunError> {
        self.lua
            .load(code)
            .set_name("=contract")
            .set_mode(ChunkMode::Text)
            .into_function()
            .map_err(|e| self.compile_error(e))
    }

    /// The compiled contract for `code`, ready to run with empty globals.
    pub(super) fn contract(&mut self, code: &str) -> Result<Function, RunError> {
        let hash = builtins::sha256(code.as_bytes());
        self.clock += 1;
        let Some(entry) = self.cache.get_mut(&hash) else {
            return self.compile_and_cache(hash, code);
        };
        entry.last_used = self.clock;
        if !is_pristine(&entry.function, &entry.env) {
            // The last call left globals behind (or reassigned _ENV): give it new ones.
            entry.env = fresh_env(&self.lua, &self.env_meta, &entry.function)
                .map_err(|e| host_error(self.limits, e))?;
        }
        Ok(entry.function.clone())
    }

    fn compile_and_cache(&mut self, hash: [u8; 32], code: &str) -> Result<Function, RunError> {
        let function = self.compile(code)?;
        let env =
            fresh_env(&self.lua, &self.env_meta, &function).map_err(|e| self.host_error(e))?;
        if self.cache.len() >= MAX_CACHED_CONTRACTS {
            self.evict_least_recently_used();
        }
        let entry = CachedContract {
            function: function.clone(),
            env,
            last_used: self.clock,
        };
        self.cache.insert(hash, entry);
        Ok(function)
    }

    fn evict_least_recently_used(&mut self) {
        let oldest = self
            .cache
            .iter()
            .min_by_key(|(_, entry)| entry.last_used)
            .map(|(hash, _)| *hash);
        if let Some(oldest) = oldest {
            self.cache.remove(&oldest);
        }
    }

    /// Maps an error raised while a contract ran (or while the runner fed it) to the
    /// [`RunError`] a client should see. The limits are recognised from the per-call flag and
    /// from the error kind, never from the message, which a contract controls.
    pub(super) fn runtime_error(&self, err: mlua::Error) -> RunError {
        if self.meter.exceeded() {
            RunError::InstructionBudgetExceeded(self.meter.budget)
        } else if is_memory_error(&err) {
            RunError::MemoryLimitExceeded(self.limits.memory_limit)
        } else {
            RunError::ContractFailed(lua_message(&err))
        }
    }

    /// Maps an error of the runner's own work for a call (preparing the contract, handing it
    /// values): only the memory cap can legitimately make it fail.
    pub(super) fn host_error(&self, err: mlua::Error) -> RunError {
        host_error(self.limits, err)
    }

    fn compile_error(&self, err: mlua::Error) -> RunError {
        match err {
            mlua::Error::SyntaxError { message, .. } => {
                RunError::InvalidContract(truncate(message))
            }
            err if is_memory_error(&err) => RunError::MemoryLimitExceeded(self.limits.memory_limit),
            err => RunError::Internal(format!("compiling a contract: {err}")),
        }
    }
}

/// See [`Vm::host_error`].
fn host_error(limits: Limits, err: mlua::Error) -> RunError {
    if is_memory_error(&err) {
        RunError::MemoryLimitExceeded(limits.memory_limit)
    } else {
        RunError::Internal(err.to_string())
    }
}

/// Gives `function` a new, empty globals table that falls back to the sandbox.
fn fresh_env(lua: &Lua, env_meta: &Table, function: &Function) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    env.set_metatable(Some(env_meta.clone()))?;
    function.set_environment(env.clone())?;
    Ok(env)
}

/// Whether `function` still runs with `env` and `env` is still empty.
fn is_pristine(function: &Function, env: &Table) -> bool {
    env.is_empty()
        && function
            .environment()
            .is_some_and(|current| current == *env)
}

fn is_memory_error(err: &mlua::Error) -> bool {
    match err {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. }
        | mlua::Error::WithContext { cause, .. }
        | mlua::Error::BadArgument { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// Lua's own message, without mlua's prefixes or the stack traceback.
fn lua_message(err: &mlua::Error) -> String {
    let message = match err {
        mlua::Error::RuntimeError(message) => message.clone(),
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::CallbackError { cause, .. } => return lua_message(cause),
        other => other.to_string(),
    };
    let message = match message.find("\nstack traceback:") {
        Some(end) => message[..end].to_owned(),
        None => message,
    };
    truncate(message)
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        instruction_budget: 1_000_000,
        memory_limit: 8 << 20,
    };

    #[test]
    fn a_contract_is_compiled_once_per_vm() {
        let mut vm = Vm::new(LIMITS).expect("vm");
        let first = vm.contract("return {}").expect("compiles");
        let second = vm.contract("return {}").expect("cached");
        assert_eq!(first, second);
        assert_ne!(first, vm.contract("return { }").expect("another contract"));
    }

    #[test]
    fn polluted_globals_are_replaced_before_the_next_call() {
        let mut vm = Vm::new(LIMITS).expect("vm");
        let code = "x = (x or 0) + 1 return x";
        for _ in 0..3 {
            let contract = vm.contract(code).expect("compiles");
            assert_eq!(contract.call::<i64>(()).expect("runs"), 1);
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut vm = Vm::new(LIMITS).expect("vm");
        for i in 0..MAX_CACHED_CONTRACTS + 10 {
            vm.contract(&format!("return {i}")).expect("compiles");
        }
        assert_eq!(vm.cache.len(), MAX_CACHED_CONTRACTS);
    }

    #[test]
    fn the_memory_cap_only_applies_during_a_call() {
        let mut vm = Vm::new(LIMITS).expect("vm");
        let grow = "local t = {} for i = 1, 4 do t[i] = string.rep('x', 4e6) end return #t";
        vm.begin_call().expect("begin");
        let err = vm
            .contract(grow)
            .and_then(|f| f.call::<i64>(()).map_err(|e| vm.runtime_error(e)));
        assert_eq!(err, Err(RunError::MemoryLimitExceeded(LIMITS.memory_limit)));
        vm.end_call().expect("end");
        let contract = vm.contract(grow).expect("compiles");
        assert_eq!(contract.call::<i64>(()).expect("no cap outside a call"), 4);
    }

    #[test]
    fn messages_lose_the_traceback_and_stay_short() {
        let err =
            mlua::Error::RuntimeError("contract:1: boom\nstack traceback:\n\t[C]: in ?".into());
        assert_eq!(lua_message(&err), "contract:1: boom");
        let long = lua_message(&mlua::Error::RuntimeError("é".repeat(MAX_MESSAGE_LEN)));
        assert!(long.len() <= MAX_MESSAGE_LEN + '…'.len_utf8());
    }
}
