//! The Lua runtime: contracts are Lua 5.4 source, run as coroutines over sharded storage.
//!
//! A contract is called with its parameter as its only argument (`local param = ...`). It asks
//! for keys by yielding them, `local a, b = coroutine.yield(key_a, key_b)`; the runner locks
//! them through [`KeyAccess`] and resumes the contract with their values ("" when absent). When
//! it finishes, the contract returns one table of key → value strings: its writes, or its
//! answer in a read-only call. The rules are in [`protocol`]; the sandbox in `sandbox.lua`.
//!
//! Every call runs under an instruction budget and a memory cap, on a VM borrowed from a pool;
//! see [`vm`] for how calls on the same VM are kept apart.

mod builtins;
pub mod contracts;
mod pool;
mod protocol;
mod vm;

use std::collections::HashSet;
use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use mlua::thread::ThreadStatus;
use mlua::{MultiValue, Value};
use parsec_core::{LockMode, Settings, Value as StoredValue};

use self::pool::VmPool;
use self::vm::{Limits, Vm};
use crate::runner::{KeyAccess, RunError, RunOutput, Runner};

pub use self::protocol::{
    MAX_KEY_LEN, MAX_KEYS_PER_YIELD, MAX_OUTPUT_ENTRIES, MAX_VALUE_LEN, display_key,
};

/// Runs Lua contracts; cheap to share, calls run in parallel on pooled VMs.
pub struct LuaRunner {
    pool: VmPool,
}

impl LuaRunner {
    /// A runner that stops a call after about `instruction_budget` Lua instructions (accurate
    /// to a thousand) or when it allocates more than `memory_limit_bytes`.
    pub fn new(instruction_budget: u64, memory_limit_bytes: usize) -> Self {
        LuaRunner {
            pool: VmPool::new(Limits {
                instruction_budget,
                memory_limit: memory_limit_bytes,
            }),
        }
    }

    /// A runner with the limits of the cluster settings.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::new(
            settings.lua_instruction_budget,
            settings.lua_memory_limit_bytes,
        )
    }

    pub fn instruction_budget(&self) -> u64 {
        self.pool.limits().instruction_budget
    }

    pub fn memory_limit_bytes(&self) -> usize {
        self.pool.limits().memory_limit
    }
}

impl fmt::Debug for LuaRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuaRunner")
            .field("instruction_budget", &self.instruction_budget())
            .field("memory_limit_bytes", &self.memory_limit_bytes())
            .finish()
    }
}

#[async_trait]
impl Runner for LuaRunner {
    fn name(&self) -> &'static str {
        "lua"
    }

    fn validate(&self, code: &[u8]) -> Result<(), RunError> {
        let source = contract_source(code)?;
        let vm = self.pool.check_out()?;
        let result = vm.begin_call().and_then(|()| vm.compile(source).map(drop));
        self.pool.check_in(vm, reusable(&result));
        result
    }

    async fn run(
        &self,
        code: &StoredValue,
        param: &Bytes,
        read_only: bool,
        access: &mut dyn KeyAccess,
    ) -> Result<RunOutput, RunError> {
        let source = contract_source(code)?;
        // If this future is dropped mid-call, `vm` is dropped with it: a VM is only reused
        // after a call that ended.
        let mut vm = self.pool.check_out()?;
        let result = execute(&mut vm, source, param, read_only, access).await;
        self.pool.check_in(vm, reusable(&result));
        result
    }
}

/// Whether a VM may serve another call after a call that ended with `result`.
fn reusable<T>(result: &Result<T, RunError>) -> bool {
    !matches!(
        result,
        Err(RunError::InstructionBudgetExceeded(_)
            | RunError::MemoryLimitExceeded(_)
            | RunError::Internal(_))
    )
}

/// The contract's source text. Precompiled chunks are refused outright: Lua does not verify
/// bytecode, and malformed bytecode can crash the VM.
fn contract_source(code: &[u8]) -> Result<&str, RunError> {
    if code.is_empty() {
        return Err(RunError::InvalidContract("empty contract".to_owned()));
    }
    if code.starts_with(b"\x1b") {
        return Err(RunError::InvalidContract(
            "precompiled (binary) chunks are not accepted; deploy Lua source".to_owned(),
        ));
    }
    std::str::from_utf8(code)
        .map_err(|e| RunError::InvalidContract(format!("contract is not valid UTF-8: {e}")))
}

/// Runs one call on `vm`: resumes the contract, serving each yield with locked values, until
/// it returns.
async fn execute(
    vm: &mut Vm,
    source: &str,
    param: &Bytes,
    read_only: bool,
    access: &mut dyn KeyAccess,
) -> Result<RunOutput, RunError> {
    vm.begin_call()?;
    let contract = vm.contract(source)?;
    let lua = vm.lua();
    let thread = lua.create_thread(contract).map_err(|e| vm.host_error(e))?;
    let mode = if read_only {
        LockMode::Read
    } else {
        LockMode::Write
    };
    let mut locked = HashSet::new();
    let param = lua.create_string(param).map_err(|e| vm.host_error(e))?;
    let mut input = MultiValue::from_iter([Value::String(param)]);
    let mut yield_no = 0;
    loop {
        let output: MultiValue = thread.resume(input).map_err(|e| vm.runtime_error(e))?;
        if thread.status() != ThreadStatus::Resumable {
            return protocol::output_from_return(output, read_only, &locked);
        }
        yield_no += 1;
        let keys = protocol::keys_from_yield(yield_no, output)?;
        // A refused lock ends the call right here: the contract is not resumed.
        let values = access.lock(keys.clone(), mode).await?;
        if values.len() != keys.len() {
            return Err(RunError::Internal(format!(
                "asked for {} keys, received {} values",
                keys.len(),
                values.len()
            )));
        }
        locked.extend(keys);
        input = values
            .iter()
            .map(|value| lua.create_string(value).map(Value::String))
            .collect::<mlua::Result<MultiValue>>()
            .map_err(|e| vm.host_error(e))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants every lock; every key reads as absent.
    struct Empty;

    #[async_trait]
    impl KeyAccess for Empty {
        async fn lock(
            &mut self,
            keys: Vec<parsec_core::Key>,
            _: LockMode,
        ) -> Result<Vec<StoredValue>, crate::runner::AccessError> {
            Ok(vec![StoredValue::new(); keys.len()])
        }
    }

    async fn run(runner: &LuaRunner, code: &'static str) -> Result<RunOutput, RunError> {
        runner
            .run(
                &StoredValue::from_static(code.as_bytes()),
                &Bytes::new(),
                false,
                &mut Empty,
            )
            .await
    }

    #[tokio::test]
    async fn sequential_calls_reuse_one_vm() {
        let runner = LuaRunner::new(10_000, 1 << 20);
        for code in [
            "coroutine.yield('k') return { k = 'v' }",
            "error('no')",
            "return 1",
        ] {
            let _ = run(&runner, code).await;
            assert_eq!(runner.pool.idle_len(), 1, "{code}");
        }
    }

    #[tokio::test]
    async fn a_vm_that_hit_a_limit_is_dropped() {
        let runner = LuaRunner::new(10_000, 1 << 20);
        run(&runner, "return {}").await.expect("runs");
        let result = run(&runner, "while true do end").await;
        assert_eq!(result, Err(RunError::InstructionBudgetExceeded(10_000)));
        assert_eq!(runner.pool.idle_len(), 0);
        run(&runner, "return {}").await.expect("runs on a new vm");
        assert_eq!(runner.pool.idle_len(), 1);
    }

    #[test]
    fn settings_set_the_limits() {
        let settings = Settings::default();
        let runner = LuaRunner::from_settings(&settings);
        assert_eq!(runner.instruction_budget(), settings.lua_instruction_budget);
        assert_eq!(runner.memory_limit_bytes(), settings.lua_memory_limit_bytes);
    }
}
