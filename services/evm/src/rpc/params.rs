//! Request parameters: block tags resolved against the head, which blocks state reads may name
//! (only the latest: DESIGN.md §4 offers no historical state), and `eth_call`'s transaction
//! object.

use alloy_primitives::TxKind;
use alloy_rpc_types_eth::{BlockNumberOrTag, TransactionRequest};
use jsonrpsee::types::ErrorObjectOwned;
use serde::Deserialize;

use crate::call::CallRequest;
use crate::rpc::error::{invalid_params, server_error};

/// The block number `tag` names once the head is `head`: every tag but `earliest` is the head
/// (sealed blocks are final; there is no pending block to show).
pub fn block_number(tag: BlockNumberOrTag, head: u64) -> u64 {
    match tag {
        BlockNumberOrTag::Earliest => 0,
        BlockNumberOrTag::Number(number) => number,
        BlockNumberOrTag::Latest
        | BlockNumberOrTag::Pending
        | BlockNumberOrTag::Safe
        | BlockNumberOrTag::Finalized => head,
    }
}

/// Whether state reads can serve block `number`: the head, or the block being built above it
/// (a client that just read `eth_blockNumber` may race a seal). Older blocks are refused
/// clearly rather than answered with today's state.
pub fn check_state_block(number: u64, head: u64) -> Result<(), ErrorObjectOwned> {
    if number.saturating_add(1) < head {
        return Err(server_error(format!(
            "historical state is not available: block {number} is older than the head {head} \
             (only \"latest\" and \"pending\" are served)"
        )));
    }
    if number > head.saturating_add(1) {
        return Err(server_error("header not found"));
    }
    Ok(())
}

/// `eth_call` / `eth_estimateGas`'s transaction object.
pub fn call_request(request: TransactionRequest) -> Result<CallRequest, ErrorObjectOwned> {
    if request.blob_versioned_hashes.is_some()
        || request.sidecar.is_some()
        || request.authorization_list.is_some()
    {
        return Err(invalid_params(
            "blob (EIP-4844) and set-code (EIP-7702) transactions are not supported",
        ));
    }
    if request.gas_price.is_some()
        && (request.max_fee_per_gas.is_some() || request.max_priority_fee_per_gas.is_some())
    {
        return Err(invalid_params(
            "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) specified",
        ));
    }
    let input = request.input.try_into_unique_input().map_err(|_| {
        invalid_params(
            "both \"data\" and \"input\" are set and not equal. Please use \"input\" to pass transaction call data",
        )
    })?;
    Ok(CallRequest {
        from: request.from,
        to: match request.to {
            Some(TxKind::Call(to)) => Some(to),
            Some(TxKind::Create) | None => None,
        },
        gas: request.gas,
        gas_price: request.gas_price,
        max_fee_per_gas: request.max_fee_per_gas,
        max_priority_fee_per_gas: request.max_priority_fee_per_gas,
        value: request.value,
        input: input.unwrap_or_default(),
        nonce: request.nonce,
        access_list: request.access_list,
    })
}

/// A count as geth's `math.HexOrDecimal64` reads it: a JSON number, or a hex or decimal string
/// (`eth_feeHistory`'s block count is sent both ways by clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HexOrDecimal(pub u64);

impl<'de> Deserialize<'de> for HexOrDecimal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        let parsed = match &value {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            },
            _ => None,
        };
        parsed
            .map(Self)
            .ok_or_else(|| D::Error::custom(format!("invalid count: {value}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloy_primitives::{Address, Bytes};
    use alloy_rpc_types_eth::TransactionInput;

    use super::*;

    #[test]
    fn tags_resolve_to_the_head_except_earliest() {
        assert_eq!(block_number(BlockNumberOrTag::Latest, 9), 9);
        assert_eq!(block_number(BlockNumberOrTag::Pending, 9), 9);
        assert_eq!(block_number(BlockNumberOrTag::Safe, 9), 9);
        assert_eq!(block_number(BlockNumberOrTag::Finalized, 9), 9);
        assert_eq!(block_number(BlockNumberOrTag::Earliest, 9), 0);
        assert_eq!(block_number(BlockNumberOrTag::Number(4), 9), 4);
    }

    #[test]
    fn state_reads_serve_the_head_only() {
        assert!(check_state_block(9, 9).is_ok());
        assert!(check_state_block(10, 9).is_ok(), "the block being built");
        assert!(check_state_block(8, 9).is_ok(), "a seal raced the client");
        let old = check_state_block(3, 9).unwrap_err();
        assert!(old.message().contains("historical state is not available"));
        assert_eq!(
            check_state_block(12, 9).unwrap_err().message(),
            "header not found"
        );
        assert!(check_state_block(0, 0).is_ok());
        assert!(check_state_block(u64::MAX, 9).is_err());
    }

    #[test]
    fn call_objects_take_input_or_data_but_not_both_different() {
        let to = Address::repeat_byte(1);
        let mut request = TransactionRequest::default().to(to);
        request.input = TransactionInput::both(Bytes::from_static(b"\x01"));
        let call = call_request(request.clone()).unwrap();
        assert_eq!(call.to, Some(to));
        assert_eq!(call.input, Bytes::from_static(b"\x01"));
        request.input = TransactionInput {
            input: Some(Bytes::from_static(b"\x01")),
            data: Some(Bytes::from_static(b"\x02")),
        };
        let error = call_request(request).unwrap_err();
        assert!(error.message().contains("both \"data\" and \"input\""));
        let create = call_request(TransactionRequest::default()).unwrap();
        assert_eq!(create.to, None);
    }

    #[test]
    fn counts_are_hex_or_decimal() {
        let parse = |v: serde_json::Value| serde_json::from_value::<HexOrDecimal>(v);
        assert_eq!(parse(serde_json::json!(5)).unwrap().0, 5);
        assert_eq!(parse(serde_json::json!("0x10")).unwrap().0, 16);
        assert_eq!(parse(serde_json::json!("12")).unwrap().0, 12);
        assert!(parse(serde_json::json!("ten")).is_err());
    }
}
