//! Chain, call and submission errors as JSON-RPC error objects, with geth's codes and words:
//! client libraries classify errors by code 3 + revert data and by phrases such as
//! "nonce too low" or "insufficient funds".

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::{Panic, Revert, SolError};
use jsonrpsee::types::ErrorObjectOwned;

use crate::call::CallError;
use crate::chain::{ChainError, SendError};
use crate::executor::ExecError;

/// geth's code for a reverted `eth_call` / `eth_estimateGas`; the data is the revert output.
pub const EXECUTION_REVERTED: i32 = 3;
/// geth's code for every other failure of a request it understood.
pub const SERVER_ERROR: i32 = -32000;
/// EIP-1474 "limit exceeded": a request asked for more than the server serves at once.
pub const LIMIT_EXCEEDED: i32 = -32005;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;

pub fn invalid_params(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(INVALID_PARAMS, message, None::<()>)
}

pub fn server_error(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(SERVER_ERROR, message, None::<()>)
}

pub fn limit_exceeded(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(LIMIT_EXCEEDED, message, None::<()>)
}

pub fn internal_error(message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(INTERNAL_ERROR, message, None::<()>)
}

/// The backend failed to read (shard unreachable, corrupt record): not the client's fault.
pub fn chain_error(error: &ChainError) -> ErrorObjectOwned {
    tracing::warn!(%error, "chain read failed");
    ErrorObjectOwned::owned(INTERNAL_ERROR, error.to_string(), None::<()>)
}

/// `eth_call` / `eth_estimateGas` failures.
pub fn call_error(error: CallError) -> ErrorObjectOwned {
    match error {
        CallError::Reverted { output, .. } => reverted(output),
        CallError::Halted {
            out_of_gas: true, ..
        } => server_error("out of gas"),
        CallError::Halted { reason, .. } => server_error(reason),
        error @ CallError::GasRequiredExceedsAllowance(_) => server_error(error.to_string()),
        CallError::Exec(error) => exec_error(error),
    }
}

/// `eth_sendRawTransaction` failures: -32000 with geth's message.
pub fn send_error(error: SendError) -> ErrorObjectOwned {
    match error {
        SendError::Exec(error) => exec_error(error),
        SendError::Failed {
            ref message,
            uncertain,
        } => {
            tracing::warn!(%message, uncertain, "transaction did not complete");
            server_error(error.to_string())
        }
        other => server_error(other.to_string()),
    }
}

fn exec_error(error: ExecError) -> ErrorObjectOwned {
    match error {
        ExecError::Invalid(invalid) => server_error(invalid.to_string()),
        other => {
            tracing::warn!(error = %other, "execution failed");
            ErrorObjectOwned::owned(INTERNAL_ERROR, other.to_string(), None::<()>)
        }
    }
}

/// Code 3, "execution reverted[: reason]", data = the revert output in hex (geth's
/// `revertError`).
pub fn reverted(output: Bytes) -> ErrorObjectOwned {
    let message = match revert_reason(&output) {
        Some(reason) => format!("execution reverted: {reason}"),
        None => "execution reverted".to_string(),
    };
    ErrorObjectOwned::owned(EXECUTION_REVERTED, message, Some(output))
}

/// What geth's `abi.UnpackRevert` finds in revert data: an `Error(string)` reason or a
/// `Panic(uint256)` explained; `None` for custom errors and empty data.
pub fn revert_reason(output: &[u8]) -> Option<String> {
    if let Ok(revert) = Revert::abi_decode(output) {
        return Some(revert.reason);
    }
    let panic = Panic::abi_decode(output).ok()?;
    Some(panic_reason(panic.code))
}

/// geth's `panicReasons` (Solidity's panic codes).
fn panic_reason(code: U256) -> String {
    let known = match u64::try_from(code) {
        Ok(0x00) => "generic panic",
        Ok(0x01) => "assert(false)",
        Ok(0x11) => "arithmetic underflow or overflow",
        Ok(0x12) => "division or modulo by zero",
        Ok(0x21) => "enum overflow",
        Ok(0x22) => "invalid encoded storage byte array accessed",
        Ok(0x31) => "out-of-bounds array access; popping on an empty array",
        Ok(0x32) => "out-of-bounds access of an array or bytesN",
        Ok(0x41) => "out of memory",
        Ok(0x51) => "uninitialized function",
        _ => return format!("unknown panic code: {code:#x}"),
    };
    known.to_string()
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, hex};
    use alloy_sol_types::SolError;

    use super::*;
    use crate::tx::TxError;

    #[test]
    fn error_string_reverts_carry_the_reason_and_the_data() {
        let data: Bytes = Revert {
            reason: "not enough".into(),
        }
        .abi_encode()
        .into();
        let error = reverted(data.clone());
        assert_eq!(error.code(), EXECUTION_REVERTED);
        assert_eq!(error.message(), "execution reverted: not enough");
        let raw = error.data().map(|d| d.get().to_string());
        assert_eq!(raw, Some(format!("\"{data}\"")));
    }

    #[test]
    fn custom_errors_and_empty_data_have_no_reason() {
        let custom =
            hex!("fb8f41b2000000000000000000000000000000000000000000000000000000000000002a");
        assert_eq!(revert_reason(&custom), None);
        assert_eq!(revert_reason(&[]), None);
        let error = reverted(Bytes::new());
        assert_eq!(error.message(), "execution reverted");
        assert_eq!(error.data().map(|d| d.get()), Some("\"0x\""));
    }

    #[test]
    fn panics_are_explained_like_geth() {
        let division: Vec<u8> = Panic {
            code: U256::from(0x12),
        }
        .abi_encode();
        assert_eq!(
            revert_reason(&division).as_deref(),
            Some("division or modulo by zero")
        );
        let odd: Vec<u8> = Panic {
            code: U256::from(0x99),
        }
        .abi_encode();
        assert_eq!(
            revert_reason(&odd).as_deref(),
            Some("unknown panic code: 0x99")
        );
    }

    #[test]
    fn invalid_transactions_keep_geths_words() {
        let error = send_error(SendError::Invalid(TxError::NonceTooLow {
            sender: Address::ZERO,
            tx: 0,
            state: 3,
        }));
        assert_eq!(error.code(), SERVER_ERROR);
        assert!(
            error.message().starts_with("nonce too low"),
            "{}",
            error.message()
        );
        let error = call_error(CallError::Exec(ExecError::Invalid(
            TxError::InsufficientFunds {
                sender: Address::ZERO,
                have: U256::ZERO,
                want: U256::from(1),
            },
        )));
        assert_eq!(error.code(), SERVER_ERROR);
        assert!(error.message().starts_with("insufficient funds"));
        let error = call_error(CallError::GasRequiredExceedsAllowance(100));
        assert_eq!(error.message(), "gas required exceeds allowance (100)");
    }
}
