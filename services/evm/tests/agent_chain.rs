//! The agent's chain end to end in one process: real shard engines and lock tables, the broker's
//! commit protocol, the ticket machine's block clock and sealer, the EVM over locked keys.

mod common;

use common::in_process::{self, WAIT, sealed};

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_sol_types::{SolCall, SolEvent, SolValue};
use common::{Fee, IToken, Wallet, token_artifact, with_args};
use parsec_evm::chain::{QueueFull, QueueLimits, SendError};
use parsec_evm::{AgentChain, Chain, ChainSettings, EvmConfig, TxError};

const GWEI: u128 = 1_000_000_000;

struct World {
    chain: Arc<AgentChain>,
    alice: Wallet,
}

async fn world(nonce_gap_timeout: Duration) -> World {
    let settings = ChainSettings {
        evm: EvmConfig::default(),
        base_fee: GWEI as u64,
        nonce_gap_timeout,
        accounts: Vec::new(),
        ..ChainSettings::default()
    };
    let alice = Wallet::new(0xa1);
    let chain =
        in_process::chain(3, settings, &[alice.address()], U256::from(10u128.pow(21))).await;
    World { chain, alice }
}

fn transfer(wallet: &mut Wallet, to: Address, value: u64) -> alloy_primitives::Bytes {
    wallet.eip1559(
        TxKind::Call(to),
        U256::from(value),
        Default::default(),
        21_000,
        Fee::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_consecutive_nonces_commits_and_seals_into_stable_blocks() {
    let mut w = world(Duration::from_secs(10)).await;
    let bob = Address::repeat_byte(0xb0);
    let raws: Vec<_> = (0..12)
        .map(|_| transfer(&mut w.alice, bob, 1_000))
        .collect();
    // Sent all at once, latest nonce first: each waits for its predecessor.
    let sends = raws.iter().rev().map(|raw| {
        let chain = Arc::clone(&w.chain);
        let raw = raw.clone();
        tokio::spawn(async move { chain.send_raw_transaction(raw).await })
    });
    let mut hashes = Vec::new();
    for send in futures::future::join_all(sends).await {
        hashes.push(send.unwrap().expect("every nonce of the burst commits"));
    }
    let blocks = sealed(&w.chain, &hashes).await;
    // A block seals once lock-free reads see its transactions (a cross-shard commit is
    // answered before its commit phase lands).
    assert_eq!(
        w.chain.account(bob).await.unwrap().balance,
        U256::from(12_000)
    );
    assert_eq!(w.chain.account(w.alice.address()).await.unwrap().nonce, 12);
    let head = w.chain.head().await.unwrap();
    for block in &blocks {
        assert!(block.number <= head);
        // A sealed block reads back the same, by number and by hash.
        let again = w
            .chain
            .block_by_number(block.number)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.as_ref(), block.as_ref());
        let by_hash = w.chain.block_by_hash(block.hash).await.unwrap().unwrap();
        assert_eq!(by_hash.number, block.number);
        let parent = w
            .chain
            .block_by_number(block.number - 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(block.parent_hash, parent.hash);
        let mut cumulative = 0;
        for tx in &block.transactions {
            cumulative += tx.receipt.gas_used;
            assert_eq!(tx.cumulative_gas_used, cumulative);
            assert!(tx.receipt.status);
        }
    }
    // Each transaction is in exactly one block, and a block lists its nonces in order.
    let mut listed: Vec<B256> = Vec::new();
    let mut seen_blocks = std::collections::BTreeSet::new();
    for block in &blocks {
        if seen_blocks.insert(block.number) {
            let nonces: Vec<u64> = block.transactions.iter().map(|t| t.receipt.nonce).collect();
            assert!(nonces.windows(2).all(|w| w[0] < w[1]), "{nonces:?}");
            listed.extend(block.transactions.iter().map(|t| t.hash));
        }
    }
    listed.sort();
    let mut expected = hashes.clone();
    expected.sort();
    assert_eq!(listed, expected);
    // The block number advances with time and never goes backwards. (The feed may still
    // announce the head read above: it is told after the head moves.)
    let mut feed = w.chain.subscribe_blocks();
    let mut last = 0;
    while last <= head {
        let next = tokio::time::timeout(WAIT, feed.recv())
            .await
            .expect("the head advances")
            .unwrap();
        assert!(next.number > last, "{} after {last}", next.number);
        last = next.number;
    }
    assert!(
        w.chain
            .block_by_number(w.chain.head().await.unwrap() + 1)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_errors_use_geths_words_and_a_gap_that_does_not_close_fails() {
    let mut w = world(Duration::from_millis(300)).await;
    let bob = Address::repeat_byte(0xb0);
    let first = transfer(&mut w.alice, bob, 1);
    w.chain.send_raw_transaction(first.clone()).await.unwrap();
    let again = w.chain.send_raw_transaction(first).await.unwrap_err();
    assert!(
        matches!(again, SendError::Invalid(TxError::NonceTooLow { .. })),
        "{again}"
    );
    assert!(again.to_string().starts_with("nonce too low"), "{again}");

    w.alice.nonce = 5;
    let gap = transfer(&mut w.alice, bob, 1);
    let error = w.chain.send_raw_transaction(gap).await.unwrap_err();
    assert!(
        matches!(
            error,
            SendError::NonceGap {
                tx: 5,
                state: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().starts_with("nonce too high"), "{error}");
    // Nothing of the refused transaction was written.
    assert_eq!(w.chain.account(w.alice.address()).await.unwrap().nonce, 1);
    assert_eq!(w.chain.pending_nonce(w.alice.address()).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_transfer_lands_with_its_log_at_a_block_level_index() {
    let mut w = world(Duration::from_secs(10)).await;
    let bob = Address::repeat_byte(0xb0);
    let args = (
        "Parsec".to_string(),
        "PRS".to_string(),
        U256::from(1_000_000u64),
    )
        .abi_encode_params();
    let deploy = w.alice.eip1559(
        TxKind::Create,
        U256::ZERO,
        with_args(&token_artifact().bytecode, &args),
        3_000_000,
        Fee::default(),
    );
    let deployed = w.chain.send_raw_transaction(deploy).await.unwrap();
    let token = w.alice.address().create(0);
    let input = IToken::transferCall {
        to: bob,
        amount: U256::from(250),
    }
    .abi_encode();
    let send = w.alice.eip1559(
        TxKind::Call(token),
        U256::ZERO,
        input.into(),
        100_000,
        Fee::default(),
    );
    let sent = w.chain.send_raw_transaction(send).await.unwrap();
    let blocks = sealed(&w.chain, &[deployed, sent]).await;
    let lookup = w.chain.transaction(sent).await.unwrap().unwrap();
    let tx = lookup.tx();
    assert_eq!(tx.receipt.to, Some(token));
    assert_eq!(tx.receipt.logs.len(), 1);
    let log = &tx.receipt.logs[0];
    assert_eq!(log.address, token);
    assert_eq!(log.topics()[0], IToken::Transfer::SIGNATURE_HASH);
    let earlier_logs: usize = lookup.block.transactions[..lookup.index]
        .iter()
        .map(|t| t.receipt.logs.len())
        .sum();
    assert_eq!(tx.first_log_index, earlier_logs as u64);
    assert!(
        blocks[1]
            .logs_bloom
            .contains_input(alloy_primitives::BloomInput::Raw(token.as_slice()))
    );
    // eth_call sees the committed balance.
    let call = parsec_evm::CallRequest {
        to: Some(token),
        input: IToken::balanceOfCall { who: bob }.abi_encode().into(),
        ..Default::default()
    };
    let output = w.chain.call(call).await.unwrap().output;
    assert_eq!(U256::abi_decode(&output).unwrap(), U256::from(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_cannot_hold_more_than_its_share_of_the_agent() {
    let settings = ChainSettings {
        base_fee: GWEI as u64,
        nonce_gap_timeout: Duration::from_secs(3),
        queue: QueueLimits {
            per_sender: 2,
            ..QueueLimits::default()
        },
        ..ChainSettings::default()
    };
    let mut alice = Wallet::new(0xa1);
    let chain =
        in_process::chain(3, settings, &[alice.address()], U256::from(10u128.pow(21))).await;
    let bob = Address::repeat_byte(0xb0);
    let raws: Vec<_> = (0..4).map(|_| transfer(&mut alice, bob, 1)).collect();

    // Nonces 1 and 2 wait for nonce 0: alice's line is full. One at a time, so that the
    // pending nonce tells that each has queued.
    let mut waiting = Vec::new();
    for (nonce, raw) in raws.iter().enumerate().take(3).skip(1) {
        let sender = Arc::clone(&chain);
        let raw = raw.clone();
        waiting.push(tokio::spawn(async move {
            sender.send_raw_transaction(raw).await
        }));
        let deadline = std::time::Instant::now() + WAIT;
        while chain.pending_nonce(alice.address()).await.unwrap() != nonce as u64 + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "nonce {nonce} never queued"
            );
            tokio::task::yield_now().await;
        }
    }
    let refused = chain.send_raw_transaction(raws[3].clone()).await;
    assert!(
        matches!(
            refused,
            Err(SendError::QueueFull(QueueFull::Sender { limit: 2, .. }))
        ),
        "{refused:?}"
    );
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("account limit exceeded"), "{message}");

    // The waiting ones give up when the gap does not close; then alice's line is free again
    // and her transactions in order all commit.
    for wait in futures::future::join_all(waiting).await {
        assert!(
            matches!(wait.unwrap(), Err(SendError::NonceGap { .. })),
            "a future nonce fails when its gap does not close"
        );
    }
    let mut hashes = Vec::new();
    for raw in &raws {
        hashes.push(
            chain
                .send_raw_transaction(raw.clone())
                .await
                .expect("in order, every transaction commits"),
        );
    }
    // A cross-shard commit is answered at its commit point; lock-free reads see it once its
    // block seals.
    sealed(&chain, &hashes).await;
    assert_eq!(chain.account(alice.address()).await.unwrap().nonce, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_longer_than_the_gap_timeout_commits_while_its_line_moves() {
    // Each step of the line takes a few ms; the whole line several times the timeout.
    let timeout = Duration::from_millis(60);
    let mut w = world(timeout).await;
    let bob = Address::repeat_byte(0xb0);
    let raws: Vec<_> = (0..100).map(|_| transfer(&mut w.alice, bob, 1)).collect();
    let started = std::time::Instant::now();
    let sends = raws.iter().rev().map(|raw| {
        let chain = Arc::clone(&w.chain);
        let raw = raw.clone();
        tokio::spawn(async move { chain.send_raw_transaction(raw).await })
    });
    let mut hashes = Vec::new();
    for send in futures::future::join_all(sends).await {
        hashes.push(
            send.unwrap()
                .expect("a nonce whose predecessors keep committing is not a gap"),
        );
    }
    let elapsed = started.elapsed();
    sealed(&w.chain, &hashes).await;
    eprintln!("100 consecutive nonces in {elapsed:?} with a {timeout:?} gap timeout");
    // Meaningful only if the line took longer than the timeout: the last nonces waited longer.
    assert!(elapsed > timeout, "{elapsed:?}");
    assert_eq!(w.chain.account(w.alice.address()).await.unwrap().nonce, 100);
}
