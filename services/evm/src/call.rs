//! `eth_call` and `eth_estimateGas`: executions over lock-free reads of committed state. No
//! ticket, no lock, no write; the keys are discovered the way [`crate::executor`] discovers
//! them, with reads instead of locks. As in geth, a call may run at gas price zero below the
//! base fee, from any address (even a contract's) and without a nonce check.

use std::collections::HashMap;

use alloy_eips::eip2930::AccessList;
use alloy_primitives::{Address, Bytes, Log, TxKind, U256};
use parsec_core::{Key, Value};
use revm::context::TxEnv;
use revm::context::result::{EVMError, ExecutionResult, HaltReason, Output};
use revm::context_interface::Cfg as _;

use crate::config::BlockInfo;
use crate::executor::{Env, ErrorContext, ExecError, ExecStats, Executor, Run, balance_of};
use crate::reader::StateReader;
use crate::state;

/// Rounds of reads a call may take to find its keys (one per key in the worst case, as when
/// a contract walks a linked list in storage).
const MAX_READ_ROUNDS: u32 = 4096;
/// geth's gas stipend slack in the optimistic estimate (`params.CallStipend`).
const CALL_STIPEND: u64 = 2_300;
/// geth stops the binary search once within 1.5 % of the answer (15 / 1000).
const ESTIMATE_ERROR_PER_MILLE: u128 = 15;
const ESTIMATE_ERROR_PER_MILLE_DENOMINATOR: u128 = 1000;

/// An `eth_call` / `eth_estimateGas` request (the transaction fields of the JSON object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallRequest {
    pub from: Option<Address>,
    /// `None` simulates a contract creation.
    pub to: Option<Address>,
    pub gas: Option<u64>,
    pub gas_price: Option<u128>,
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub value: Option<U256>,
    pub input: Bytes,
    pub nonce: Option<u64>,
    pub access_list: Option<AccessList>,
}

/// A call that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSuccess {
    pub output: Bytes,
    pub gas_used: u64,
    pub logs: Vec<Log>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// REVERT: geth answers JSON-RPC error 3 "execution reverted" with `output` as data.
    #[error("execution reverted")]
    Reverted { output: Bytes, gas_used: u64 },
    /// Out of gas, invalid opcode, …
    #[error("{reason}")]
    Halted {
        reason: String,
        gas_used: u64,
        out_of_gas: bool,
    },
    /// eth_estimateGas: the call fails even with all the gas it may have.
    #[error("gas required exceeds allowance ({0})")]
    GasRequiredExceedsAllowance(u64),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl Executor {
    /// Executes `request` against committed state and returns what it returned, or its revert
    /// data intact.
    pub async fn call(
        &self,
        request: &CallRequest,
        block: &BlockInfo,
        reader: &dyn StateReader,
    ) -> Result<CallSuccess, CallError> {
        let mut values = HashMap::new();
        let gas = self.call_gas(request);
        let (env, tx) = self.call_env(request, block, gas);
        let run = self.run_reading(&env, &tx, reader, &mut values).await?;
        let context = self.call_error_context(request, block, &values);
        outcome(run, &context)
    }

    /// The gas `request` needs, found as geth does: run with the most gas it may have, then
    /// search below what it used.
    pub async fn estimate_gas(
        &self,
        request: &CallRequest,
        block: &BlockInfo,
        reader: &dyn StateReader,
    ) -> Result<u64, CallError> {
        let mut values = HashMap::new();
        let mut hi = self.call_gas(request);
        // With a price, the sender's balance bounds the gas it can buy.
        let price = request
            .max_fee_per_gas
            .or(request.gas_price)
            .unwrap_or_default();
        if price > 0 {
            let key = state::account_key(&request.from.unwrap_or_default());
            let read = reader
                .read(vec![key.clone()])
                .await
                .map_err(ExecError::from)?;
            let balance = read
                .first()
                .map(|v| state::decode_account(v).map(|a| a.balance))
                .transpose()
                .map_err(|e| ExecError::Internal(e.to_string()))?
                .unwrap_or_default();
            let available = balance.saturating_sub(request.value.unwrap_or_default());
            let allowance = available / U256::from(price);
            hi = hi.min(u64::try_from(allowance).unwrap_or(u64::MAX));
            values.insert(key, read.into_iter().next().unwrap_or_default());
        }
        let cap = hi;
        let first = self
            .try_gas(request, block, reader, &mut values, hi)
            .await?;
        let (used, spent) = match first {
            Ok(gas) => gas,
            // As geth: out of gas with all the gas allowed is "exceeds allowance"; any other
            // failure is reported as it is.
            Err(CallError::Halted {
                out_of_gas: true, ..
            }) => {
                return Err(CallError::GasRequiredExceedsAllowance(cap));
            }
            Err(other) => return Err(other),
        };
        // A plain value transfer costs what it used (geth short-cuts it the same way).
        if request.input.is_empty()
            && let Some(to) = request.to
            && !values
                .get(&state::account_key(&to))
                .and_then(|v| state::decode_account(v).ok())
                .is_some_and(|a| a.has_code())
        {
            return Ok(used);
        }
        let mut lo = used.saturating_sub(1);
        let optimistic = (spent + CALL_STIPEND) * 64 / 63;
        if optimistic < hi {
            match self
                .try_gas(request, block, reader, &mut values, optimistic)
                .await?
            {
                Ok(_) => hi = optimistic,
                Err(_) => lo = optimistic,
            }
        }
        while lo + 1 < hi {
            if u128::from(hi - lo) * ESTIMATE_ERROR_PER_MILLE_DENOMINATOR
                < u128::from(hi) * ESTIMATE_ERROR_PER_MILLE
            {
                break;
            }
            let mut mid = lo + (hi - lo) / 2;
            // Most calls need little more than they used: search near the bottom first.
            if mid > lo.saturating_mul(2) {
                mid = lo * 2;
            }
            match self
                .try_gas(request, block, reader, &mut values, mid)
                .await?
            {
                Ok(_) => hi = mid,
                Err(_) => lo = mid,
            }
        }
        Ok(hi)
    }

    /// Runs `request` with `gas`: `Ok(Ok((used, spent before refund)))` when it succeeds,
    /// `Ok(Err(_))` when it reverts or halts.
    async fn try_gas(
        &self,
        request: &CallRequest,
        block: &BlockInfo,
        reader: &dyn StateReader,
        values: &mut HashMap<Key, Value>,
        gas: u64,
    ) -> Result<Result<(u64, u64), CallError>, CallError> {
        let (env, tx) = self.call_env(request, block, gas);
        let run = self.run_reading(&env, &tx, reader, values).await?;
        let spent = match &run.outcome {
            Ok((result, _)) => result.gas().total_gas_spent(),
            Err(_) => 0,
        };
        let context = self.call_error_context(request, block, values);
        match outcome(run, &context) {
            Ok(success) => Ok(Ok((success.gas_used, spent.max(success.gas_used)))),
            Err(error @ (CallError::Reverted { .. } | CallError::Halted { .. })) => Ok(Err(error)),
            Err(other) => Err(other),
        }
    }

    fn call_error_context(
        &self,
        request: &CallRequest,
        block: &BlockInfo,
        values: &HashMap<Key, Value>,
    ) -> ErrorContext {
        let sender = request.from.unwrap_or_default();
        ErrorContext {
            sender,
            nonce: request.nonce.unwrap_or_default(),
            tx_type: if request.max_fee_per_gas.is_some() {
                2
            } else {
                0
            },
            chain_id: Some(self.config().chain_id),
            want_chain_id: self.config().chain_id,
            max_fee: request
                .max_fee_per_gas
                .or(request.gas_price)
                .unwrap_or_default(),
            tip: request.max_priority_fee_per_gas.unwrap_or_default(),
            base_fee: block.base_fee,
            balance: balance_of(values, &sender),
        }
    }

    /// Gas of a call: what it asks for, at most the cap (and the per-transaction cap of the
    /// fork, as geth does from Osaka on).
    fn call_gas(&self, request: &CallRequest) -> u64 {
        let cfg = self.config().cfg_env();
        let cap = self
            .config()
            .call_gas_cap
            .min(cfg.tx_gas_limit_cap())
            .min(self.config().block_gas_limit);
        request.gas.map_or(cap, |gas| gas.min(cap))
    }

    fn call_env(&self, request: &CallRequest, block: &BlockInfo, gas: u64) -> (Env, TxEnv) {
        let mut env = Env::new(self.config(), block);
        let (tx_type, gas_price, gas_priority_fee) = match request.max_fee_per_gas {
            Some(fee_cap) => (
                2,
                fee_cap,
                Some(request.max_priority_fee_per_gas.unwrap_or_default()),
            ),
            None => {
                let ty = if request.access_list.is_some() { 1 } else { 0 };
                (ty, request.gas_price.unwrap_or_default(), None)
            }
        };
        // geth's eth_call never checks the nonce (SkipNonceChecks).
        env.cfg.disable_nonce_check = true;
        env.cfg.disable_eip3607 = true;
        // geth's NoBaseFee: a call that names no price runs below the base fee.
        env.cfg.disable_base_fee = gas_price == 0 && gas_priority_fee.unwrap_or_default() == 0;
        let tx = TxEnv {
            tx_type,
            caller: request.from.unwrap_or_default(),
            gas_limit: gas,
            gas_price,
            kind: request.to.map_or(TxKind::Create, TxKind::Call),
            value: request.value.unwrap_or_default(),
            data: request.input.clone(),
            nonce: request.nonce.unwrap_or_default(),
            chain_id: Some(self.config().chain_id),
            access_list: request.access_list.clone().unwrap_or_default(),
            gas_priority_fee,
            ..TxEnv::default()
        };
        (env, tx)
    }

    /// Runs, reading the keys each run finds missing, until a run finds them all.
    async fn run_reading(
        &self,
        env: &Env,
        tx: &TxEnv,
        reader: &dyn StateReader,
        values: &mut HashMap<Key, Value>,
    ) -> Result<Run, ExecError> {
        let mut rounds = 0;
        let none = HashMap::new();
        let mut stats = ExecStats::default();
        loop {
            let probe = self.probe(env, tx, values, &none, &mut stats)?;
            if probe.missing.is_empty() {
                return Ok(probe.run);
            }
            rounds += 1;
            if rounds > MAX_READ_ROUNDS {
                return Err(ExecError::Unsettled(rounds));
            }
            let keys: Vec<Key> = probe.missing.into_iter().collect();
            let read = reader.read(keys.clone()).await?;
            values.extend(keys.into_iter().zip(read));
        }
    }
}

fn outcome(run: Run, context: &ErrorContext) -> Result<CallSuccess, CallError> {
    match run.outcome {
        Ok((
            ExecutionResult::Success {
                output, logs, gas, ..
            },
            _,
        )) => {
            let output = match output {
                Output::Call(data) | Output::Create(data, _) => data,
            };
            Ok(CallSuccess {
                output,
                gas_used: gas.tx_gas_used(),
                logs,
            })
        }
        Ok((ExecutionResult::Revert { output, gas, .. }, _)) => Err(CallError::Reverted {
            output,
            gas_used: gas.tx_gas_used(),
        }),
        Ok((ExecutionResult::Halt { reason, gas, .. }, _)) => Err(CallError::Halted {
            out_of_gas: matches!(reason, HaltReason::OutOfGas(_)),
            reason: reason.to_string(),
            gas_used: gas.tx_gas_used(),
        }),
        Err(EVMError::Transaction(invalid)) => Err(CallError::Exec(ExecError::Invalid(
            context.tx_error(invalid),
        ))),
        Err(EVMError::Database(error)) => Err(CallError::Exec(ExecError::State(error))),
        Err(other) => Err(CallError::Exec(ExecError::Internal(other.to_string()))),
    }
}
