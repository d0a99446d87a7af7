//! A revm instance per thread, reused across executions.
//!
//! Building an EVM allocates its frame stack, interpreter stack and memory; doing that for
//! every run made the allocator grow and trim the heap on every transaction and halved
//! throughput. Runs are synchronous (no `.await` inside), so a thread-local instance can be
//! borrowed for the length of one run; only the database (the [`View`]) and the block change.

use std::cell::RefCell;

use revm::context::result::{EVMError, ExecResultAndState, ExecutionResult};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::handler::{MainnetContext, MainnetEvm};
use revm::{Context, ExecuteEvm, MainBuilder, MainContext};

use crate::view::{View, ViewError};

type Machine = MainnetEvm<MainnetContext<View>>;

pub(crate) type Outcome = Result<ExecResultAndState<ExecutionResult>, EVMError<ViewError>>;

thread_local! {
    static MACHINE: RefCell<Option<Machine>> = const { RefCell::new(None) };
}

/// Executes `tx` over `view` in `block` under `cfg`; hands the view back with the outcome.
pub(crate) fn transact(cfg: &CfgEnv, block: &BlockEnv, tx: TxEnv, view: View) -> (Outcome, View) {
    MACHINE.with(|slot| {
        // Taken out of the slot for the run, so a (never expected) nested use builds its own.
        let cached = slot.borrow_mut().take();
        let mut machine = match cached {
            Some(machine) if machine.ctx.cfg == *cfg => machine,
            _ => Context::mainnet()
                .with_db(View::default())
                .with_cfg(cfg.clone())
                .build_mainnet(),
        };
        machine.ctx.block = block.clone();
        machine.ctx.journaled_state.database = view;
        let outcome = machine.transact(tx);
        let view = std::mem::take(&mut machine.ctx.journaled_state.database);
        *slot.borrow_mut() = Some(machine);
        (outcome, view)
    })
}
