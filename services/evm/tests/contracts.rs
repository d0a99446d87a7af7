//! Contracts through the executor: an OpenZeppelin ERC-20 and the Probe test contract
//! (reverts, custom errors, nested calls, CREATE/CREATE2, SELFDESTRUCT, precompiles), plus
//! eth_call / eth_estimateGas over lock-free reads.
#![allow(clippy::unwrap_used)]

mod common;

use alloy_primitives::{Address, B256, Bytes, TxKind, U256, b256, hex, keccak256};
use alloy_signer::SignerSync;
use alloy_sol_types::{Revert, SolCall, SolError, SolEvent, SolValue};
use common::*;
use parsec_core::LockMode;
use parsec_evm::state;
use parsec_evm::{CallError, CallRequest, ExecError, TxError};

const BOB: Address = Address::repeat_byte(0xb0);
const CAROL: Address = Address::repeat_byte(0xc0);
const SUPPLY: u128 = 1_000_000 * ETH;

struct World {
    chain: Chain,
    alice: Wallet,
    bob: Wallet,
}

fn world() -> World {
    let mut chain = Chain::new();
    let alice = Wallet::new(1);
    let bob = Wallet::new(2);
    chain.store.fund(alice.address(), U256::from(100 * ETH));
    chain.store.fund(bob.address(), U256::from(100 * ETH));
    World { chain, alice, bob }
}

impl World {
    async fn deploy(&mut self, code: Bytes) -> Address {
        let raw = self
            .alice
            .eip1559(TxKind::Create, U256::ZERO, code, 3_000_000, Fee::default());
        let done = self.chain.send_ok(&raw).await;
        done.receipt.contract_address.unwrap()
    }

    async fn deploy_token(&mut self) -> Address {
        let args =
            ("Parsec".to_string(), "PRS".to_string(), U256::from(SUPPLY)).abi_encode_params();
        let token = self
            .deploy(with_args(&token_artifact().bytecode, &args))
            .await;
        assert_eq!(self.chain.store.code(token), token_artifact().deployed);
        token
    }

    async fn deploy_probe(&mut self) -> Address {
        self.deploy(probe_artifact().bytecode).await
    }

    /// alice calls `to` with `input`.
    async fn call_tx(&mut self, to: Address, input: Vec<u8>) -> parsec_evm::Executed {
        let raw = self.alice.eip1559(
            TxKind::Call(to),
            U256::ZERO,
            input.into(),
            1_000_000,
            Fee::default(),
        );
        self.chain.send(&raw).await.unwrap()
    }

    /// eth_call from alice.
    async fn read(&self, to: Address, input: Vec<u8>) -> Result<Bytes, CallError> {
        let request = CallRequest {
            from: Some(self.alice.address()),
            to: Some(to),
            input: input.into(),
            ..CallRequest::default()
        };
        self.chain
            .executor
            .call(&request, &self.chain.block, &self.chain.store)
            .await
            .map(|ok| ok.output)
    }

    async fn token_balance(&self, token: Address, who: Address) -> U256 {
        let out = self
            .read(token, IToken::balanceOfCall { who }.abi_encode())
            .await
            .unwrap();
        U256::abi_decode(&out).unwrap()
    }
}

#[tokio::test]
async fn erc20_deploy_transfer_and_events() {
    let mut w = world();
    let token = w.deploy_token().await;
    let alice = w.alice.address();
    assert_eq!(token, alice.create(0));
    assert_eq!(w.token_balance(token, alice).await, U256::from(SUPPLY));

    let done = w
        .call_tx(
            token,
            IToken::transferCall {
                to: BOB,
                amount: U256::from(100),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    assert_eq!(done.receipt.logs.len(), 1);
    let log = &done.receipt.logs[0];
    assert_eq!(log.address, token);
    let event = IToken::Transfer::decode_log_data(&log.data).unwrap();
    assert_eq!(
        (event.from, event.to, event.value),
        (alice, BOB, U256::from(100))
    );
    assert_eq!(w.token_balance(token, BOB).await, U256::from(100));
    assert_eq!(
        w.token_balance(token, alice).await,
        U256::from(SUPPLY - 100)
    );
    // Sender account, fee recipient, two balance slots.
    assert_eq!(done.writes.len(), 4, "{:?}", done.writes.keys());
}

#[tokio::test]
async fn erc20_approve_and_transfer_from() {
    let mut w = world();
    let token = w.deploy_token().await;
    let alice = w.alice.address();
    let bob = w.bob.address();
    w.call_tx(
        token,
        IToken::approveCall {
            spender: bob,
            amount: U256::from(50),
        }
        .abi_encode(),
    )
    .await;
    let raw = w.bob.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        IToken::transferFromCall {
            from: alice,
            to: CAROL,
            amount: U256::from(30),
        }
        .abi_encode()
        .into(),
        200_000,
        Fee::default(),
    );
    let done = w.chain.send_ok(&raw).await;
    assert_eq!(done.receipt.logs.len(), 1);
    assert_eq!(w.token_balance(token, CAROL).await, U256::from(30));
    let out = w
        .read(
            token,
            IToken::allowanceCall {
                owner: alice,
                spender: bob,
            }
            .abi_encode(),
        )
        .await
        .unwrap();
    assert_eq!(U256::abi_decode(&out).unwrap(), U256::from(20));

    // Beyond the allowance: a mined, reverted transaction with the custom error.
    let raw = w.bob.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        IToken::transferFromCall {
            from: alice,
            to: CAROL,
            amount: U256::from(21),
        }
        .abi_encode()
        .into(),
        200_000,
        Fee::default(),
    );
    let done = w.chain.send(&raw).await.unwrap();
    assert!(!done.receipt.status);
    let error = IToken::ERC20InsufficientAllowance::abi_decode(&done.receipt.output).unwrap();
    assert_eq!(error.allowance, U256::from(20));
    assert_eq!(w.chain.store.nonce(bob), 2);
}

#[tokio::test]
async fn a_reverted_transfer_charges_only_nonce_and_fee() {
    let mut w = world();
    let token = w.deploy_token().await;
    let bob = w.bob.address();
    let bob_eth = w.chain.store.balance(bob);
    let raw = w.bob.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        IToken::transferCall {
            to: CAROL,
            amount: U256::from(1),
        }
        .abi_encode()
        .into(),
        100_000,
        Fee::default(),
    );
    let done = w.chain.send(&raw).await.unwrap();
    let receipt = &done.receipt;
    assert!(!receipt.status);
    assert!(receipt.logs.is_empty());
    let error = IToken::ERC20InsufficientBalance::abi_decode(&receipt.output).unwrap();
    assert_eq!((error.sender, error.needed), (bob, U256::from(1)));
    let fee = U256::from(u128::from(receipt.gas_used) * receipt.effective_gas_price);
    assert_eq!(w.chain.store.balance(bob), bob_eth - fee);
    assert_eq!(w.chain.store.nonce(bob), 1);
    let keys: Vec<_> = done.writes.keys().cloned().collect();
    assert_eq!(keys.len(), 2, "sender and fee recipient only");
    assert!(done.writes.contains_key(&state::account_key(&bob)));
}

#[tokio::test]
async fn reverts_with_reason_custom_error_and_panic() {
    let mut w = world();
    let probe = w.deploy_probe().await;

    let done = w
        .call_tx(
            probe,
            IProbe::failWithReasonCall {
                reason: "nope".into(),
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.receipt.status);
    assert_eq!(
        Revert::abi_decode(&done.receipt.output).unwrap().reason,
        "nope"
    );

    let done = w
        .call_tx(
            probe,
            IProbe::failWithCustomCall {
                code: U256::from(5),
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.receipt.status);
    let custom = IProbe::Custom::abi_decode(&done.receipt.output).unwrap();
    assert_eq!(
        (custom.code, custom.who),
        (U256::from(5), w.alice.address())
    );

    let done = w
        .call_tx(
            probe,
            IProbe::divideCall {
                a: U256::from(1),
                b: U256::ZERO,
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.receipt.status);
    // Panic(0x12): division by zero.
    assert_eq!(&done.receipt.output[..4], &hex!("4e487b71"));
    assert_eq!(done.receipt.output[35], 0x12);

    // The same through eth_call: revert data intact.
    match w
        .read(
            probe,
            IProbe::failWithCustomCall {
                code: U256::from(9),
            }
            .abi_encode(),
        )
        .await
    {
        Err(CallError::Reverted { output, .. }) => {
            assert_eq!(
                IProbe::Custom::abi_decode(&output).unwrap().code,
                U256::from(9)
            );
        }
        other => panic!("expected a revert, got {other:?}"),
    }
    match w
        .read(
            probe,
            IProbe::failWithReasonCall {
                reason: "why".into(),
            }
            .abi_encode(),
        )
        .await
    {
        Err(CallError::Reverted { output, .. }) => {
            assert_eq!(Revert::abi_decode(&output).unwrap().reason, "why");
        }
        other => panic!("expected a revert, got {other:?}"),
    }
}

#[tokio::test]
async fn revert_and_out_of_gas_roll_back_storage_and_logs() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    let alice = w.alice.address();

    let done = w
        .call_tx(
            probe,
            IProbe::storeThenFailCall {
                key: U256::from(1),
                value: U256::from(2),
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.receipt.status);
    assert!(done.receipt.logs.is_empty());
    assert_eq!(w.chain.store.storage(probe, slot_of(1)), U256::ZERO);

    let before = w.chain.store.balance(alice);
    let raw = w.alice.eip1559(
        TxKind::Call(probe),
        U256::ZERO,
        IProbe::burnCall { n: U256::from(100) }.abi_encode().into(),
        100_000,
        Fee::default(),
    );
    let done = w.chain.send(&raw).await.unwrap();
    assert!(!done.receipt.status);
    assert_eq!(done.receipt.gas_used, 100_000, "a halt consumes all gas");
    assert!(done.receipt.halt_reason.as_deref().unwrap().contains("gas"));
    assert_eq!(
        w.chain.store.balance(alice),
        before - U256::from(100_000 * 2 * GWEI)
    );
    assert_eq!(done.writes.len(), 2, "sender and fee recipient only");
    assert_eq!(w.chain.store.storage(probe, slot_of(1_000_000)), U256::ZERO);

    // With enough gas it writes.
    let done = w
        .call_tx(probe, IProbe::burnCall { n: U256::from(3) }.abi_encode())
        .await;
    assert!(done.receipt.status);
    assert_eq!(
        w.chain.store.storage(probe, slot_of(1_000_002)),
        U256::from(3)
    );
}

/// The storage slot of `slots[key]` (mapping at slot 0).
fn slot_of(key: u64) -> U256 {
    U256::from_be_bytes(keccak256((U256::from(key), U256::ZERO).abi_encode()).0)
}

#[tokio::test]
async fn store_emits_an_indexed_event() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    let done = w
        .call_tx(
            probe,
            IProbe::storeCall {
                key: U256::from(4),
                value: U256::from(44),
            }
            .abi_encode(),
        )
        .await;
    let log = &done.receipt.logs[0];
    assert_eq!(log.topics()[0], IProbe::Stored::SIGNATURE_HASH);
    assert_eq!(log.topics()[1], B256::from(U256::from(4)));
    assert_eq!(w.chain.store.storage(probe, slot_of(4)), U256::from(44));
}

#[tokio::test]
async fn create_and_create2_addresses_and_nested_calls() {
    let mut w = world();
    let probe = w.deploy_probe().await;

    let done = w
        .call_tx(
            probe,
            IProbe::createCall {
                value: U256::from(42),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    // A contract's nonce starts at 1 (EIP-161), and every CREATE bumps it.
    let first = probe.create(1);
    assert_eq!(
        IProbe::createCall::abi_decode_returns(&done.receipt.output).unwrap(),
        first
    );
    let done = w
        .call_tx(
            probe,
            IProbe::createCall {
                value: U256::from(43),
            }
            .abi_encode(),
        )
        .await;
    let second = IProbe::createCall::abi_decode_returns(&done.receipt.output).unwrap();
    assert_eq!(second, probe.create(2));
    assert_eq!(w.chain.store.nonce(probe), 3);
    assert_eq!(w.chain.store.code(first), child_artifact().deployed);

    let salt = B256::repeat_byte(0x5a);
    let init = with_args(&child_artifact().bytecode, &U256::from(7).abi_encode());
    let done = w
        .call_tx(
            probe,
            IProbe::create2Call {
                salt,
                value: U256::from(7),
            }
            .abi_encode(),
        )
        .await;
    let child = IProbe::create2Call::abi_decode_returns(&done.receipt.output).unwrap();
    assert_eq!(child, probe.create2(salt, keccak256(&init)));
    let value = w
        .read(child, IChild::valueCall {}.abi_encode())
        .await
        .unwrap();
    assert_eq!(U256::abi_decode(&value).unwrap(), U256::from(7));
    // The same salt again collides: the inner CREATE2 fails and Probe reverts.
    let done = w
        .call_tx(
            probe,
            IProbe::create2Call {
                salt,
                value: U256::from(7),
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.receipt.status);

    // Nested: the child's failing call is rolled back, the outer frame goes on.
    let done = w
        .call_tx(probe, IProbe::nestedCall { child: first }.abi_encode())
        .await;
    assert!(done.receipt.status);
    assert!(!IProbe::nestedCall::abi_decode_returns(&done.receipt.output).unwrap());
    let value = w
        .read(first, IChild::valueCall {}.abi_encode())
        .await
        .unwrap();
    assert_eq!(U256::abi_decode(&value).unwrap(), U256::from(1));
}

#[tokio::test]
async fn selfdestruct_follows_cancun_rules() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    let one = U256::from(ETH);

    // Created and destroyed in one transaction: gone, its balance moved.
    let raw = w.alice.eip1559(
        TxKind::Call(probe),
        one,
        IProbe::createAndDestroyCall { beneficiary: CAROL }
            .abi_encode()
            .into(),
        1_000_000,
        Fee::default(),
    );
    let done = w.chain.send_ok(&raw).await;
    let child = IProbe::createAndDestroyCall::abi_decode_returns(&done.receipt.output).unwrap();
    assert!(w.chain.store.get(&state::account_key(&child)).is_empty());
    assert_eq!(w.chain.store.storage(child, U256::ZERO), U256::ZERO);
    assert_eq!(w.chain.store.balance(CAROL), one);

    // Created earlier: SELFDESTRUCT only moves the balance; code and storage stay.
    let raw = w.alice.eip1559(
        TxKind::Call(probe),
        one,
        IProbe::createCall {
            value: U256::from(5),
        }
        .abi_encode()
        .into(),
        1_000_000,
        Fee::default(),
    );
    let done = w.chain.send_ok(&raw).await;
    let child = IProbe::createCall::abi_decode_returns(&done.receipt.output).unwrap();
    assert_eq!(w.chain.store.balance(child), one);
    w.call_tx(
        probe,
        IProbe::destroyCall {
            child,
            beneficiary: BOB,
        }
        .abi_encode(),
    )
    .await;
    assert_eq!(w.chain.store.balance(child), U256::ZERO);
    assert_eq!(w.chain.store.code(child), child_artifact().deployed);
    assert_eq!(w.chain.store.storage(child, U256::ZERO), U256::from(5));
    assert_eq!(w.chain.store.balance(BOB), one);
}

#[tokio::test]
async fn precompiles_are_all_there() {
    let mut w = world();
    let probe = w.deploy_probe().await;

    // ecrecover
    let hash = keccak256(b"parsec");
    let signature = w.alice.signer.sign_hash_sync(&hash).unwrap();
    let out = w
        .read(
            probe,
            IProbe::recoverCall {
                hash,
                v: 27 + signature.v() as u8,
                r: signature.r().into(),
                s: signature.s().into(),
            }
            .abi_encode(),
        )
        .await
        .unwrap();
    assert_eq!(Address::abi_decode(&out).unwrap(), w.alice.address());

    // sha256
    let out = w
        .read(
            probe,
            IProbe::shaCall {
                data: Bytes::from_static(b"abc"),
            }
            .abi_encode(),
        )
        .await
        .unwrap();
    assert_eq!(
        B256::abi_decode(&out).unwrap(),
        b256!("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );

    let generator = [U256::from(1), U256::from(2)].abi_encode();
    let doubled = hex!(
        "030644e72e131a029b85045b68181585d97816a916871ca8d3c208c16d87cfd3"
        "15ed738c0e0a7c92e7845f96b2ae9c0a68a6a449e3538fc7ff3ebf7a5a18a2c4"
    );
    let mut modexp = [U256::from(1), U256::from(1), U256::from(1)].abi_encode();
    modexp.extend_from_slice(&[3, 5, 7]); // 3^5 mod 7 = 5
    let cases: Vec<(u64, Vec<u8>, Option<Vec<u8>>)> = vec![
        // ripemd160("abc")
        (
            3,
            b"abc".to_vec(),
            Some(hex!("0000000000000000000000008eb208f7e05d987a9b044a8e98c6b087f15a0bfc").to_vec()),
        ),
        // identity
        (4, b"echo".to_vec(), Some(b"echo".to_vec())),
        (5, modexp, Some(vec![5])),
        // bn254 add: G + G, and mul: 2 G
        (
            6,
            [generator.clone(), generator.clone()].concat(),
            Some(doubled.to_vec()),
        ),
        (
            7,
            [generator.clone(), U256::from(2).abi_encode()].concat(),
            Some(doubled.to_vec()),
        ),
        // bn254 pairing of nothing is true
        (8, Vec::new(), Some(U256::from(1).abi_encode())),
        // BLS12-381 G1 add of two points at infinity
        (0x0b, vec![0; 256], Some(vec![0; 128])),
    ];
    for (address, input, expected) in cases {
        let out = w
            .read(
                probe,
                IProbe::precompileCall {
                    target: Address::with_last_byte(address as u8),
                    input: input.into(),
                }
                .abi_encode(),
            )
            .await
            .unwrap();
        let result = IProbe::precompileCall::abi_decode_returns(&out).unwrap();
        assert!(result.ok, "precompile {address:#x} failed");
        assert_eq!(
            Some(result.output.to_vec()),
            expected,
            "precompile {address:#x}"
        );
    }
    // Precompiles that exist refuse bad input (an empty account would succeed): blake2f and
    // the KZG point evaluation.
    for address in [9u8, 0x0a] {
        let out = w
            .read(
                probe,
                IProbe::precompileCall {
                    target: Address::with_last_byte(address),
                    input: Bytes::from_static(b"bad"),
                }
                .abi_encode(),
            )
            .await
            .unwrap();
        assert!(
            !IProbe::precompileCall::abi_decode_returns(&out).unwrap().ok,
            "{address:#x}"
        );
    }
}

#[tokio::test]
async fn block_context_and_extcodehash() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    let out = w
        .read(probe, IProbe::contextCall {}.abi_encode())
        .await
        .unwrap();
    let context = IProbe::contextCall::abi_decode_returns(&out).unwrap();
    let block = w.chain.block;
    assert_eq!(context.chainId, U256::from(0xcbdc));
    assert_eq!(context.number, U256::from(block.number));
    assert_eq!(context.timestamp, U256::from(block.timestamp));
    assert_eq!(context.baseFee, U256::from(block.base_fee));
    assert_eq!(context.coinbase, fee_recipient());

    let out = w
        .read(probe, IProbe::codeHashCall { account: probe }.abi_encode())
        .await
        .unwrap();
    let code = IProbe::codeHashCall::abi_decode_returns(&out).unwrap();
    assert_eq!(code.hash, keccak256(probe_artifact().deployed));
    assert_eq!(code.size, U256::from(probe_artifact().deployed.len()));
}

#[tokio::test]
async fn estimate_gas_is_enough_and_failures_keep_their_data() {
    let mut w = world();
    let token = w.deploy_token().await;
    let input: Bytes = IToken::transferCall {
        to: BOB,
        amount: U256::from(10),
    }
    .abi_encode()
    .into();
    let request = CallRequest {
        from: Some(w.alice.address()),
        to: Some(token),
        input: input.clone(),
        ..CallRequest::default()
    };
    let estimate = w
        .chain
        .executor
        .estimate_gas(&request, &w.chain.block, &w.chain.store)
        .await
        .unwrap();
    let raw = w.alice.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        input,
        estimate,
        Fee::default(),
    );
    let done = w.chain.send_ok(&raw).await;
    assert!(done.receipt.gas_used <= estimate);
    assert!(
        estimate - done.receipt.gas_used < done.receipt.gas_used / 10,
        "{estimate}"
    );

    // Bob has no tokens: the estimate fails with the custom error.
    let request = CallRequest {
        from: Some(w.bob.address()),
        ..request
    };
    match w
        .chain
        .executor
        .estimate_gas(&request, &w.chain.block, &w.chain.store)
        .await
    {
        Err(CallError::Reverted { output, .. }) => {
            IToken::ERC20InsufficientBalance::abi_decode(&output).unwrap();
        }
        other => panic!("expected a revert, got {other:?}"),
    }

    // More gas than any transaction may have.
    let probe = w.deploy_probe().await;
    let request = CallRequest {
        from: Some(w.alice.address()),
        to: Some(probe),
        input: IProbe::burnCall {
            n: U256::from(100_000),
        }
        .abi_encode()
        .into(),
        ..CallRequest::default()
    };
    match w
        .chain
        .executor
        .estimate_gas(&request, &w.chain.block, &w.chain.store)
        .await
    {
        Err(error @ CallError::GasRequiredExceedsAllowance(_)) => {
            assert_eq!(
                error.to_string(),
                "gas required exceeds allowance (16777216)"
            );
        }
        other => panic!("expected exceeds allowance, got {other:?}"),
    }

    // A plain transfer needs 21000.
    let request = CallRequest {
        from: Some(w.alice.address()),
        to: Some(BOB),
        value: Some(U256::from(1)),
        ..CallRequest::default()
    };
    let estimate = w
        .chain
        .executor
        .estimate_gas(&request, &w.chain.block, &w.chain.store)
        .await
        .unwrap();
    assert_eq!(estimate, 21_000);

    // eth_call moving more value than the caller has.
    let request = CallRequest {
        from: Some(CAROL),
        to: Some(BOB),
        value: Some(U256::from(1)),
        ..CallRequest::default()
    };
    match w
        .chain
        .executor
        .call(&request, &w.chain.block, &w.chain.store)
        .await
    {
        Err(CallError::Exec(ExecError::Invalid(TxError::InsufficientFunds { .. }))) => {}
        other => panic!("expected insufficient funds, got {other:?}"),
    }
}

#[tokio::test]
async fn erc20_transfer_with_prefetch_locks_in_one_round() {
    let mut w = world();
    let token = w.deploy_token().await;
    w.call_tx(
        token,
        IToken::transferCall {
            to: BOB,
            amount: U256::from(100),
        }
        .abi_encode(),
    )
    .await;
    // Without prefetch: discovered round by round.
    let done = w
        .call_tx(
            token,
            IToken::transferCall {
                to: BOB,
                amount: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    let without = done.stats.clone();
    // Round 1: the predictable keys; its run stops at the balance check (the sender's slot
    // reads as zero), its funded twin goes on and writes both balance slots. Round 2: both
    // slots, in write mode. Then one run over locked values.
    assert_eq!(without.lock_rounds, 2, "{without:?}");
    let slots = [
        state::storage_key(&token, &balance_slot(w.alice.address())),
        state::storage_key(&token, &balance_slot(BOB)),
    ];
    let last = w.chain.last_calls.last().unwrap();
    assert_eq!(last.1, LockMode::Write);
    assert!(slots.iter().all(|slot| last.0.contains(slot)));

    w.chain.prefetch = true;
    let done = w
        .call_tx(
            token,
            IToken::transferCall {
                to: CAROL,
                amount: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    assert_eq!(done.stats.lock_rounds, 1, "{:?}", done.stats);
    // Written keys (sender, fee recipient, two slots) in write mode, the token's account in
    // read mode: one call per mode.
    assert_eq!(w.chain.last_calls.len(), 2);
    let reads = &w.chain.last_calls[1];
    assert_eq!(reads.1, LockMode::Read);
    assert!(reads.0.contains(&state::account_key(&token)));
    // Reads: the predictable keys, then both balance slots (found by the funded twin run).
    assert_eq!(done.stats.read_rounds, 2, "{:?}", done.stats);
    // The run over optimistic reads stood: two runs (and a twin) in all, none after locking.
    assert_eq!(done.stats.runs, 3, "{:?}", done.stats);
    println!(
        "without prefetch: {without:?}\nwith prefetch: {:?}",
        done.stats
    );
}

/// OpenZeppelin ERC20 keeps `_balances` at slot 0.
fn balance_slot(owner: Address) -> U256 {
    U256::from_be_bytes(keccak256((owner, U256::ZERO).abi_encode()).0)
}

#[tokio::test]
async fn a_wound_in_a_later_round_stops_at_once() {
    let mut w = world();
    let token = w.deploy_token().await;
    let raw = w.alice.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        IToken::transferCall {
            to: BOB,
            amount: U256::from(1),
        }
        .abi_encode()
        .into(),
        100_000,
        Fee::default(),
    );
    let tx = parsec_evm::decode_transaction(&raw, w.chain.executor.config()).unwrap();
    for n in 1..=3 {
        let mut access = MemAccess::failing_on(
            &w.chain.store,
            n,
            parsec_agent::runner::AccessError::Aborted("shard gone".into()),
        );
        let error = w
            .chain
            .executor
            .execute(&tx, &w.chain.block, &mut access, Default::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ExecError::Access(_)), "{error}");
        assert_eq!(access.calls.len(), n, "no lock asked after the failed one");
    }
}

#[tokio::test]
async fn the_previous_key_set_as_hints_locks_in_one_round() {
    let mut w = world();
    let token = w.deploy_token().await;
    let input: Bytes = IToken::transferCall {
        to: BOB,
        amount: U256::from(1),
    }
    .abi_encode()
    .into();
    let raw = w.alice.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        input,
        100_000,
        Fee::default(),
    );
    let tx = parsec_evm::decode_transaction(&raw, w.chain.executor.config()).unwrap();
    // A first attempt (say it was wounded before committing) tells which keys it needed.
    let mut access = MemAccess::new(&w.chain.store);
    let first = w
        .chain
        .executor
        .execute(&tx, &w.chain.block, &mut access, Default::default())
        .await
        .unwrap();
    assert!(first.stats.lock_rounds > 1);
    // The retry takes them all in its first round and runs once.
    let mut access = MemAccess::new(&w.chain.store);
    let options = parsec_evm::ExecOptions {
        reader: None,
        hints: &first.stats.locked,
    };
    let retry = w
        .chain
        .executor
        .execute(&tx, &w.chain.block, &mut access, options)
        .await
        .unwrap();
    assert_eq!(retry.stats.lock_rounds, 1);
    assert_eq!(retry.stats.runs, 1);
    assert_eq!(retry.writes, first.writes);
}

#[tokio::test]
async fn code_is_locked_until_cached_then_read_from_the_cache() {
    let mut w = world();
    let token = w.deploy_token().await;
    let code_key = state::code_key(&keccak256(token_artifact().deployed));
    // A fresh executor (another agent) has not seen the code: it read-locks the code key.
    w.chain.executor = parsec_evm::Executor::new(config());
    let done = w
        .call_tx(
            token,
            IToken::transferCall {
                to: BOB,
                amount: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    assert!(
        done.stats
            .locked
            .contains(&(code_key.clone(), LockMode::Read))
    );
    assert_eq!(w.chain.executor.code_cache().len(), 1);
    // From then on the account record's code hash is enough.
    let done = w
        .call_tx(
            token,
            IToken::transferCall {
                to: BOB,
                amount: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    assert!(!done.stats.locked.iter().any(|(key, _)| *key == code_key));
}

#[tokio::test]
async fn deploying_known_code_does_not_write_it_again() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    let code_key = state::code_key(&keccak256(child_artifact().deployed));
    let done = w
        .call_tx(
            probe,
            IProbe::createCall {
                value: U256::from(1),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.writes.contains_key(&code_key));
    // The child's code is committed; once an execution has read it, it is cached, and a second
    // child with the same code does not write-lock the shared code key.
    let first = probe.create(1);
    w.read(first, IChild::valueCall {}.abi_encode())
        .await
        .unwrap();
    let done = w
        .call_tx(
            probe,
            IProbe::createCall {
                value: U256::from(2),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    assert!(!done.writes.contains_key(&code_key));
    assert_eq!(
        w.chain.store.code(probe.create(2)),
        child_artifact().deployed
    );
}

#[tokio::test]
async fn corrupt_state_is_an_error_and_writes_nothing() {
    let mut w = world();
    let alice = w.alice.address();
    w.chain.store.data.insert(
        state::account_key(&alice),
        Bytes::from_static(&[9, 9, 9]).into(),
    );
    let raw = w.alice.eip1559(
        TxKind::Call(BOB),
        U256::from(1),
        Bytes::new(),
        21_000,
        Fee::default(),
    );
    let before = w.chain.store.data.clone();
    match w.chain.send(&raw).await {
        Err(ExecError::State(error)) => assert!(error.to_string().contains("unknown version")),
        other => panic!("expected a state error, got {other:?}"),
    }
    assert_eq!(w.chain.store.data, before);
}

#[tokio::test]
async fn a_key_read_then_written_is_upgraded_to_a_write_lock() {
    let mut w = world();
    let probe = w.deploy_probe().await;
    w.call_tx(
        probe,
        IProbe::storeCall {
            key: U256::from(7),
            value: U256::from(5),
        }
        .abi_encode(),
    )
    .await;
    // Neither zero nor the funded guess is 5: the speculative runs only read the slot, the
    // run over the locked value writes it.
    let done = w
        .call_tx(
            probe,
            IProbe::bumpIfCall {
                key: U256::from(7),
                expected: U256::from(5),
            }
            .abi_encode(),
        )
        .await;
    assert!(done.receipt.status);
    assert_eq!(w.chain.store.storage(probe, slot_of(7)), U256::from(6));
    let slot = state::storage_key(&probe, &slot_of(7));
    let modes: Vec<LockMode> = w
        .chain
        .last_calls
        .iter()
        .filter(|(keys, _)| keys.contains(&slot))
        .map(|(_, mode)| *mode)
        .collect();
    assert_eq!(modes, [LockMode::Read, LockMode::Write]);
    assert!(done.stats.locked.contains(&(slot, LockMode::Write)));
}
