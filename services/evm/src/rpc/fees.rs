//! `eth_feeHistory` rewards: the priority fee paid at given percentiles of a block's gas, as
//! geth computes them (transactions sorted by tip, weighted by the gas they used).

use alloy_consensus::Transaction as _;

use crate::chain::Block;

/// geth's cap on requested percentiles.
pub const MAX_PERCENTILES: usize = 100;

/// Percentiles must lie in [0, 100] and not decrease (geth's check).
pub fn check_percentiles(percentiles: &[f64]) -> Result<(), String> {
    if percentiles.len() > MAX_PERCENTILES {
        return Err(format!(
            "too many reward percentiles: {} (at most {MAX_PERCENTILES})",
            percentiles.len()
        ));
    }
    for (i, p) in percentiles.iter().enumerate() {
        if !(0.0..=100.0).contains(p) || (i > 0 && *p < percentiles[i - 1]) {
            return Err(format!("invalid reward percentile: {p}"));
        }
    }
    Ok(())
}

/// The tip at each of `percentiles` of `block`'s gas; zeros for an empty block.
pub fn rewards(block: &Block, percentiles: &[f64]) -> Vec<u128> {
    if block.transactions.is_empty() || block.gas_used == 0 {
        return vec![0; percentiles.len()];
    }
    let mut tips: Vec<(u128, u64)> = block
        .transactions
        .iter()
        .map(|tx| {
            let tip = tx
                .envelope
                .effective_tip_per_gas(block.base_fee)
                .unwrap_or_default();
            (tip, tx.receipt.gas_used)
        })
        .collect();
    tips.sort_unstable_by_key(|(tip, _)| *tip);
    let mut rewards = Vec::with_capacity(percentiles.len());
    let mut index = 0;
    let mut gas_seen = tips[0].1;
    for p in percentiles {
        let threshold = (block.gas_used as f64 * p / 100.0) as u64;
        while gas_seen < threshold && index + 1 < tips.len() {
            index += 1;
            gas_seen += tips[index].1;
        }
        rewards.push(tips[index].0);
    }
    rewards
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloy_consensus::{Signed, TxEnvelope, TxLegacy};
    use alloy_primitives::{Address, Bytes, Signature, TxKind, U256};

    use super::*;
    use crate::chain::BlockTx;
    use crate::executor::Receipt;

    /// A legacy transaction paying `gas_price` that used `gas_used`.
    fn paying(gas_price: u128, gas_used: u64) -> BlockTx {
        let tx = TxLegacy {
            chain_id: Some(1),
            nonce: 0,
            gas_price,
            gas_limit: 100_000,
            to: TxKind::Call(Address::repeat_byte(2)),
            value: U256::ZERO,
            input: Bytes::new(),
        };
        let signed = Signed::new_unhashed(tx, Signature::test_signature());
        let hash = *signed.hash();
        BlockTx {
            envelope: TxEnvelope::Legacy(signed),
            hash,
            sender: Address::repeat_byte(1),
            receipt: Receipt {
                tx_hash: hash,
                tx_type: 0,
                from: Address::repeat_byte(1),
                to: Some(Address::repeat_byte(2)),
                nonce: 0,
                status: true,
                gas_used,
                effective_gas_price: gas_price,
                contract_address: None,
                logs: Vec::new(),
                output: Bytes::new(),
                halt_reason: None,
            },
            cumulative_gas_used: 0,
            first_log_index: 0,
        }
    }

    #[test]
    fn rewards_are_tips_at_gas_weighted_percentiles() {
        // Base fee 10: tips 1 (10k gas), 5 (30k gas), 2 (60k gas); sorted by tip the gas
        // reaches 10k, 70k, 100k.
        let block = Block {
            base_fee: 10,
            gas_used: 100_000,
            transactions: vec![paying(11, 10_000), paying(15, 30_000), paying(12, 60_000)],
            ..empty_block()
        };
        assert_eq!(
            rewards(&block, &[0.0, 10.0, 11.0, 70.0, 71.0, 100.0]),
            vec![1, 1, 2, 2, 5, 5]
        );
    }

    fn empty_block() -> Block {
        Block {
            number: 1,
            hash: Default::default(),
            parent_hash: Default::default(),
            timestamp: 0,
            base_fee: 1,
            gas_limit: 30_000_000,
            gas_used: 0,
            logs_bloom: Default::default(),
            transactions: vec![],
        }
    }

    #[test]
    fn percentiles_are_checked_like_geth() {
        assert!(check_percentiles(&[10.0, 50.0, 50.0, 100.0]).is_ok());
        assert!(check_percentiles(&[]).is_ok());
        assert!(check_percentiles(&[50.0, 10.0]).is_err());
        assert!(check_percentiles(&[101.0]).is_err());
        assert!(check_percentiles(&[-1.0]).is_err());
        assert!(check_percentiles(&[f64::NAN]).is_err());
    }

    #[test]
    fn an_empty_block_pays_no_reward() {
        assert_eq!(rewards(&empty_block(), &[25.0, 75.0]), vec![0, 0]);
    }
}
