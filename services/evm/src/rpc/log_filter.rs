//! Log filters with geth's semantics: addresses are OR-ed, topics are positional (a null or
//! empty position matches anything, a list matches any of its values), and a filter with more
//! positions than a log has topics does not match it. Parsed from the JSON object of
//! `eth_getLogs`, `eth_newFilter` and the `logs` subscription, keeping the positions (alloy's
//! `Filter` pads to four and would match `[A, null]` against a log with one topic).

use alloy_primitives::{Address, B256, Bloom, BloomInput};
use alloy_rpc_types_eth::BlockNumberOrTag;
use serde::Deserialize;
use serde::de::Error as _;
use serde_json::Value;

use crate::rpc::convert::RpcLog;

/// geth's limit on topic positions (`maxTopics`).
pub const MAX_TOPICS: usize = 4;
/// geth's limit on addresses in one filter (`maxAddresses`).
pub const MAX_ADDRESSES: usize = 1000;

/// Which blocks a filter covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockSelection {
    /// `fromBlock` / `toBlock`; absent means `latest`.
    Range {
        from: Option<BlockNumberOrTag>,
        to: Option<BlockNumberOrTag>,
    },
    /// `blockHash` (EIP-234): exactly one block.
    Hash(B256),
}

impl Default for BlockSelection {
    fn default() -> Self {
        Self::Range {
            from: None,
            to: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub blocks: BlockSelection,
    /// Any of these; empty matches every address.
    pub addresses: Vec<Address>,
    /// Position i matches any of `topics[i]`; an empty position matches anything.
    pub topics: Vec<Vec<B256>>,
}

impl LogFilter {
    /// Whether a log of `address` with `topics` passes.
    pub fn matches(&self, address: &Address, topics: &[B256]) -> bool {
        if !self.addresses.is_empty() && !self.addresses.contains(address) {
            return false;
        }
        if self.topics.len() > topics.len() {
            return false;
        }
        self.topics
            .iter()
            .zip(topics)
            .all(|(wanted, topic)| wanted.is_empty() || wanted.contains(topic))
    }

    pub fn matches_log(&self, log: &RpcLog) -> bool {
        self.matches(&log.address(), log.topics())
    }

    /// Whether a block with `bloom` may hold a matching log (false: it certainly does not).
    pub fn may_match(&self, bloom: &Bloom) -> bool {
        let any = |values: &mut dyn Iterator<Item = &[u8]>| {
            let mut values = values.peekable();
            values.peek().is_none()
                || values.any(|value| bloom.contains_input(BloomInput::Raw(value)))
        };
        any(&mut self.addresses.iter().map(|a| a.as_slice()))
            && self
                .topics
                .iter()
                .all(|position| any(&mut position.iter().map(|t| t.as_slice())))
    }
}

/// The JSON object, fields as geth reads them; `address` and `topics` are checked by hand for
/// clear messages.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    #[serde(default)]
    from_block: Option<BlockNumberOrTag>,
    #[serde(default)]
    to_block: Option<BlockNumberOrTag>,
    #[serde(default)]
    block_hash: Option<B256>,
    #[serde(default)]
    address: Value,
    #[serde(default)]
    topics: Value,
}

impl<'de> Deserialize<'de> for LogFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawFilter::deserialize(deserializer)?;
        let blocks = match raw.block_hash {
            Some(hash) => {
                if raw.from_block.is_some() || raw.to_block.is_some() {
                    return Err(D::Error::custom(
                        "cannot specify both BlockHash and FromBlock/ToBlock, choose one or the other",
                    ));
                }
                BlockSelection::Hash(hash)
            }
            None => BlockSelection::Range {
                from: raw.from_block,
                to: raw.to_block,
            },
        };
        let addresses = parse_addresses(raw.address).map_err(D::Error::custom)?;
        let topics = parse_topics(raw.topics).map_err(D::Error::custom)?;
        Ok(Self {
            blocks,
            addresses,
            topics,
        })
    }
}

fn parse_addresses(value: Value) -> Result<Vec<Address>, String> {
    let addresses = match value {
        Value::Null => Vec::new(),
        Value::String(_) => vec![parse_address(value)?],
        Value::Array(items) => items
            .into_iter()
            .map(parse_address)
            .collect::<Result<_, _>>()?,
        other => return Err(format!("invalid addresses in query: {other}")),
    };
    if addresses.len() > MAX_ADDRESSES {
        return Err("exceed max addresses".to_string());
    }
    Ok(addresses)
}

fn parse_address(value: Value) -> Result<Address, String> {
    serde_json::from_value(value.clone()).map_err(|_| format!("invalid address: {value}"))
}

fn parse_topics(value: Value) -> Result<Vec<Vec<B256>>, String> {
    let positions = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(positions) => positions,
        other => return Err(format!("invalid topics: {other}")),
    };
    if positions.len() > MAX_TOPICS {
        return Err("exceed max topics".to_string());
    }
    positions
        .into_iter()
        .map(|position| match position {
            Value::Null => Ok(Vec::new()),
            Value::String(_) => Ok(vec![parse_topic(position)?]),
            // As geth: a null inside a list makes the whole position a wildcard.
            Value::Array(items) if items.iter().any(Value::is_null) => Ok(Vec::new()),
            Value::Array(items) => items.into_iter().map(parse_topic).collect(),
            other => Err(format!("invalid topic(s): {other}")),
        })
        .collect()
}

fn parse_topic(value: Value) -> Result<B256, String> {
    serde_json::from_value(value.clone()).map_err(|_| format!("invalid topic(s): {value}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use alloy_primitives::{Log, LogData, address, b256};
    use serde_json::json;

    use super::*;
    use crate::rpc::convert::logs_bloom;

    const A: Address = address!("00000000000000000000000000000000000000aa");
    const B: Address = address!("00000000000000000000000000000000000000bb");
    const T1: B256 = b256!("1111111111111111111111111111111111111111111111111111111111111111");
    const T2: B256 = b256!("2222222222222222222222222222222222222222222222222222222222222222");
    const T3: B256 = b256!("3333333333333333333333333333333333333333333333333333333333333333");

    fn filter(json: Value) -> LogFilter {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn topics_are_positional_with_wildcards_and_alternatives() {
        let any_then_t2 = filter(json!({"topics": [null, T2]}));
        assert!(any_then_t2.matches(&A, &[T1, T2]));
        assert!(any_then_t2.matches(&A, &[T3, T2, T1]));
        assert!(!any_then_t2.matches(&A, &[T2, T1]));
        assert!(
            !any_then_t2.matches(&A, &[T2]),
            "more positions than topics"
        );

        let alternatives = filter(json!({"topics": [[T1, T3]]}));
        assert!(alternatives.matches(&A, &[T1]));
        assert!(alternatives.matches(&A, &[T3, T2]));
        assert!(!alternatives.matches(&A, &[T2]));
        assert!(!alternatives.matches(&A, &[]));

        let trailing_null = filter(json!({"topics": [T1, null]}));
        assert!(trailing_null.matches(&A, &[T1, T2]));
        assert!(
            !trailing_null.matches(&A, &[T1]),
            "geth: two positions need two topics"
        );

        let null_in_list = filter(json!({"topics": [[T1, null]]}));
        assert!(null_in_list.matches(&A, &[T2]));

        let everything = filter(json!({}));
        assert!(everything.matches(&B, &[]));
        assert!(filter(json!({"topics": []})).matches(&B, &[]));
    }

    #[test]
    fn addresses_are_alternatives() {
        let one = filter(json!({"address": A}));
        assert!(one.matches(&A, &[]));
        assert!(!one.matches(&B, &[]));
        let both = filter(json!({"address": [A, B], "topics": [T1]}));
        assert!(both.matches(&B, &[T1]));
        assert!(!both.matches(&B, &[T2]));
    }

    #[test]
    fn block_hash_excludes_a_range() {
        let hash = filter(json!({"blockHash": T1}));
        assert_eq!(hash.blocks, BlockSelection::Hash(T1));
        let range = filter(json!({"fromBlock": "0x1", "toBlock": "latest"}));
        assert_eq!(
            range.blocks,
            BlockSelection::Range {
                from: Some(BlockNumberOrTag::Number(1)),
                to: Some(BlockNumberOrTag::Latest)
            }
        );
        let both =
            serde_json::from_value::<LogFilter>(json!({"blockHash": T1, "fromBlock": "0x1"}));
        assert!(
            both.unwrap_err()
                .to_string()
                .contains("cannot specify both")
        );
    }

    #[test]
    fn malformed_filters_are_refused_with_a_reason() {
        let too_many = serde_json::from_value::<LogFilter>(json!({"topics": [T1, T1, T1, T1, T1]}));
        assert!(
            too_many
                .unwrap_err()
                .to_string()
                .contains("exceed max topics")
        );
        let bad_topic = serde_json::from_value::<LogFilter>(json!({"topics": ["0x12"]}));
        assert!(bad_topic.unwrap_err().to_string().contains("invalid topic"));
        let bad_address = serde_json::from_value::<LogFilter>(json!({"address": 5}));
        assert!(
            bad_address
                .unwrap_err()
                .to_string()
                .contains("invalid addresses")
        );
    }

    #[test]
    fn the_bloom_rules_out_blocks_without_a_match() {
        let log = Log {
            address: A,
            data: LogData::new_unchecked(vec![T1, T2], Default::default()),
        };
        let bloom = logs_bloom([&log]);
        assert!(filter(json!({"address": A, "topics": [T1, [T3, T2]]})).may_match(&bloom));
        assert!(filter(json!({})).may_match(&bloom));
        assert!(!filter(json!({"address": B})).may_match(&bloom));
        assert!(!filter(json!({"topics": [null, T3]})).may_match(&bloom));
    }
}
