//! The ERC-20 workload over Ethereum JSON-RPC (the C++ reference's §8.1 generator): deploy an
//! OpenZeppelin token, give every account its share, then signed `transfer`s of one unit
//! between random accounts in a closed loop, one transaction in flight per worker. At the end the
//! token's total is checked, and every account's balance against the acknowledged transfers.
//!
//! Transactions pay the base fee and no tip: a tip credits the fee recipient, one account every
//! transaction would then write.

use crate::cpu::{process_cpu_seconds, total_cpu_seconds};
use crate::floor;
use crate::report::{Cost, Report};
use crate::run::{Tally, new_histogram, progress_bar, spawn_ticker, stop_signal};
use crate::signer::Secp256k1Signer;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256, hex};
use alloy_sol_types::{SolCall, SolValue, sol};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

sol! {
    function transfer(address to, uint256 amount) external returns (bool);
    function balanceOf(address who) external view returns (uint256);
    function totalSupply() external view returns (uint256);
}

/// The token (services/evm/contracts, OpenZeppelin 5): `constructor(name, symbol, supply)`
/// mints `supply` to the deployer.
const TOKEN_ARTIFACT: &str = include_str!("../../evm/contracts/artifacts/ParsecToken.json");
/// The first account of the standard development mnemonic: `parsec dev` funds it.
const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// Tokens each account starts with.
const SHARE: u64 = 1_000_000;
pub(crate) const DEPLOY_GAS: u64 = 3_000_000;
const TRANSFER_GAS: u64 = 100_000;

#[derive(Clone, Debug)]
pub struct Erc20Options {
    pub accounts: usize,
    pub concurrency: usize,
    pub duration: Duration,
    pub max_transfers: Option<u64>,
    pub progress: bool,
    /// Signs the deployment (its account pays for gas when the base fee is not zero).
    pub deployer_key: Option<String>,
    /// Sign the transfers before the measured window (as a wallet would have), rather than in
    /// it: the generator runs on the cores it measures.
    pub presign: bool,
    /// Fraction of transfers sent to one hot account (contention), 0 to 1.
    pub hot_fraction: f64,
    /// Server processes whose CPU the measured window is charged to.
    pub server_pids: Vec<u32>,
}

impl Default for Erc20Options {
    fn default() -> Self {
        Self {
            accounts: 1_000,
            concurrency: 64,
            duration: Duration::from_secs(10),
            max_transfers: None,
            progress: true,
            deployer_key: None,
            presign: true,
            hot_fraction: 0.0,
            server_pids: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Erc20Error {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("{endpoint}: {message}")]
    Rpc { endpoint: String, message: String },
    #[error("set-up failed: {0}")]
    Setup(String),
    #[error("unexpected answer to {method}: {answer}")]
    Answer { method: String, answer: String },
}

/// A JSON-RPC endpoint.
#[derive(Clone)]
struct Endpoint {
    url: String,
    http: reqwest::Client,
}

impl Endpoint {
    async fn call(&self, method: &str, params: Value) -> Result<Value, Erc20Error> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let rpc_error = |message: String| Erc20Error::Rpc {
            endpoint: self.url.clone(),
            message,
        };
        let reply: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| rpc_error(e.to_string()))?
            .json()
            .await
            .map_err(|e| rpc_error(e.to_string()))?;
        if let Some(error) = reply.get("error") {
            return Err(rpc_error(format!("{method}: {error}")));
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    async fn quantity(&self, method: &str, params: Value) -> Result<u128, Erc20Error> {
        let answer = self.call(method, params).await?;
        answer
            .as_str()
            .and_then(|s| u128::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| Erc20Error::Answer {
                method: method.into(),
                answer: answer.to_string(),
            })
    }

    async fn send(&self, raw: &[u8]) -> Result<(), Erc20Error> {
        self.call(
            "eth_sendRawTransaction",
            json!([format!("0x{}", hex::encode(raw))]),
        )
        .await
        .map(|_| ())
    }

    async fn balance_of(&self, token: Address, who: Address) -> Result<U256, Erc20Error> {
        let data = balanceOfCall { who }.abi_encode();
        let answer = self
            .call(
                "eth_call",
                json!([{"to": token, "data": format!("0x{}", hex::encode(data))}, "latest"]),
            )
            .await?;
        let bytes = answer
            .as_str()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| Erc20Error::Answer {
                method: "eth_call".into(),
                answer: answer.to_string(),
            })?;
        U256::abi_decode(&bytes).map_err(|e| Erc20Error::Answer {
            method: "eth_call balanceOf".into(),
            answer: e.to_string(),
        })
    }
}

/// Fees every transaction pays: the base fee, no tip.
#[derive(Clone, Copy)]
pub(crate) struct Fees {
    pub(crate) chain_id: u64,
    pub(crate) max_fee: u128,
}

pub(crate) struct Account {
    pub(crate) signer: Secp256k1Signer,
    nonce: u64,
    /// Transfers signed ahead, with consecutive nonces: (recipient index, raw transaction).
    presigned: VecDeque<(usize, Bytes)>,
}

impl Account {
    pub(crate) fn new(signer: Secp256k1Signer, nonce: u64) -> Self {
        Self {
            signer,
            nonce,
            presigned: VecDeque::new(),
        }
    }

    pub(crate) fn sign(&mut self, fees: Fees, to: TxKind, input: Vec<u8>, gas: u64) -> Bytes {
        self.sign_with_value(fees, to, U256::ZERO, input, gas)
    }

    fn sign_with_value(
        &mut self,
        fees: Fees,
        to: TxKind,
        value: U256,
        input: Vec<u8>,
        gas: u64,
    ) -> Bytes {
        let tx = TxEip1559 {
            chain_id: fees.chain_id,
            nonce: self.nonce,
            gas_limit: gas,
            max_fee_per_gas: fees.max_fee,
            max_priority_fee_per_gas: 0,
            to,
            value,
            access_list: Default::default(),
            input: input.into(),
        };
        let signature = self.signer.sign_hash(&tx.signature_hash());
        self.nonce += 1;
        let envelope: TxEnvelope = tx.into_signed(signature).into();
        envelope.encoded_2718().into()
    }

    /// Signs a transfer of one token unit to `to`.
    pub(crate) fn sign_transfer(&mut self, fees: Fees, token: Address, to: Address) -> Bytes {
        self.sign_transfer_of(fees, token, to, U256::from(1))
    }

    pub(crate) fn sign_transfer_of(
        &mut self,
        fees: Fees,
        token: Address,
        to: Address,
        amount: U256,
    ) -> Bytes {
        let input = transferCall { to, amount }.abi_encode();
        self.sign(fees, TxKind::Call(token), input, TRANSFER_GAS)
    }
}

pub(crate) fn token_creation_code(supply: U256) -> Result<Vec<u8>, Erc20Error> {
    let artifact: Value = serde_json::from_str(TOKEN_ARTIFACT).map_err(|e| Erc20Error::Answer {
        method: "token artifact".into(),
        answer: e.to_string(),
    })?;
    let mut code = artifact["bytecode"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| Erc20Error::Answer {
            method: "token artifact".into(),
            answer: "no bytecode".into(),
        })?;
    code.extend(("Bench".to_string(), "BNC".to_string(), supply).abi_encode_params());
    Ok(code)
}

pub async fn run_erc20(
    endpoints: Vec<String>,
    options: Erc20Options,
) -> Result<Report, Erc20Error> {
    if endpoints.is_empty() || options.accounts < 2 || options.concurrency == 0 {
        return Err(Erc20Error::Options(
            "need at least one endpoint, two accounts and one transfer in flight".into(),
        ));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| Erc20Error::Options(e.to_string()))?;
    let endpoints: Vec<Endpoint> = endpoints
        .into_iter()
        .map(|url| Endpoint {
            url: if url.starts_with("http") {
                url
            } else {
                format!("http://{url}")
            },
            http: http.clone(),
        })
        .collect();
    let first = &endpoints[0];
    let fees = Fees {
        chain_id: first.quantity("eth_chainId", json!([])).await? as u64,
        // Twice the current base fee leaves room should it rise (it is configuration here).
        max_fee: first.quantity("eth_gasPrice", json!([])).await? * 2,
    };
    let key = options.deployer_key.as_deref().unwrap_or(DEV_KEY);
    let signer = Secp256k1Signer::from_hex(key)
        .map_err(|e| Erc20Error::Options(format!("deployer key: {e}")))?;
    let nonce = first
        .quantity(
            "eth_getTransactionCount",
            json!([signer.address(), "pending"]),
        )
        .await? as u64;
    let mut deployer = Account::new(signer, nonce);

    let setup = setup_bar(options.progress, options.accounts as u64 + 1);
    setup.set_message("deploying the token");
    let supply = U256::from(options.accounts as u64) * U256::from(SHARE);
    let token = deployer.signer.address().create(deployer.nonce);
    let raw = deployer.sign(
        fees,
        TxKind::Create,
        token_creation_code(supply)?,
        DEPLOY_GAS,
    );
    first.send(&raw).await?;
    setup.inc(1);
    setup.set_message("funding the accounts");
    setup.set_length(1 + funding_len(options.accounts, fees.max_fee));
    let mut accounts: Vec<Account> = (0..options.accounts)
        .map(|_| Account::new(Secp256k1Signer::random(), 0))
        .collect();
    // With a base fee, every account also needs ether for gas: enough for 5,000 transfers.
    let gas_money = U256::from(fees.max_fee) * U256::from(TRANSFER_GAS) * U256::from(5_000u64);
    // Consecutive nonces from one sender, sent without waiting: the agent orders them.
    let mut funding: Vec<Bytes> = Vec::new();
    for account in &accounts {
        let to = account.signer.address();
        funding.push(deployer.sign_transfer_of(fees, token, to, U256::from(SHARE)));
        if !gas_money.is_zero() {
            funding.push(deployer.sign_with_value(
                fees,
                TxKind::Call(to),
                gas_money,
                Vec::new(),
                21_000,
            ));
        }
    }
    for chunk in funding.chunks(32) {
        let sends = chunk.iter().map(|raw| first.send(raw));
        for sent in futures::future::join_all(sends).await {
            sent?;
            setup.inc(1);
        }
    }
    setup.finish_and_clear();
    let addresses: Arc<Vec<Address>> =
        Arc::new(accounts.iter().map(|a| a.signer.address()).collect());
    let recipients = Recipients {
        count: options.accounts,
        hot_fraction: options.hot_fraction,
    };
    if options.presign {
        // Seconds of CPU-bound signing: on the blocking pool, not on a runtime worker.
        let per_account = presigned_per_account(&options);
        let (addresses, show) = (addresses.clone(), options.progress);
        accounts = tokio::task::spawn_blocking(move || {
            presign(
                &mut accounts,
                per_account,
                |account, from| {
                    let to = recipients.pick(from);
                    (to, account.sign_transfer(fees, token, addresses[to]))
                },
                show,
            );
            accounts
        })
        .await
        .map_err(|e| Erc20Error::Setup(format!("signing transfers: {e}")))?;
    }

    let expected: Arc<Vec<AtomicI64>> = Arc::new(
        (0..options.accounts)
            .map(|_| AtomicI64::new(SHARE as i64))
            .collect(),
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress_bar(options.duration, options.progress);
    let ticker = spawn_ticker(bar.clone(), tally.clone(), stop.clone(), options.duration);
    let interrupt = {
        let stop = stop.clone();
        tokio::spawn(async move {
            stop_signal().await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    // The floor is measured here, between set-up and load, while the servers are idle.
    let floor = tokio::task::spawn_blocking(move || floor::measure(fees, FLOOR_TRANSFERS))
        .await
        .map_err(|e| e.to_string())
        .and_then(|floor| floor);
    let floor = floor
        .inspect_err(|error| tracing::warn!(%error, "measuring the floor failed"))
        .ok();
    let sent = Arc::new(AtomicU64::new(0));
    let cpu_before = (
        total_cpu_seconds(&options.server_pids),
        process_cpu_seconds(None),
    );
    let started = Instant::now();
    // Worker w owns accounts w, w + C, w + 2C, …: an account has one transaction in flight.
    let mut owned: Vec<Vec<(usize, Account)>> =
        (0..options.concurrency).map(|_| Vec::new()).collect();
    for (index, account) in accounts.drain(..).enumerate() {
        owned[index % options.concurrency].push((index, account));
    }
    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .filter(|(_, owned)| !owned.is_empty())
        .map(|(worker, owned)| {
            let worker = Worker {
                endpoint: endpoints[worker % endpoints.len()].clone(),
                owned,
                addresses: addresses.clone(),
                expected: expected.clone(),
                tally: tally.clone(),
                stop: stop.clone(),
                sent: sent.clone(),
                token,
                fees,
                recipients,
                started,
                options: options.clone(),
            };
            tokio::spawn(worker.run())
        })
        .collect();
    let mut latencies = new_histogram();
    for worker in workers {
        if let Ok(histogram) = worker.await {
            latencies.add(&histogram).ok();
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = (
        total_cpu_seconds(&options.server_pids),
        process_cpu_seconds(None),
    );
    stop.store(true, Ordering::Relaxed);
    interrupt.abort();
    let _ = ticker.await;
    bar.finish_and_clear();

    // The audit: balances read back through eth_call once the last transfers have landed.
    let mut observed = Vec::with_capacity(addresses.len());
    for chunk in addresses.chunks(64) {
        let reads = chunk.iter().map(|who| first.balance_of(token, *who));
        for balance in futures::future::join_all(reads).await {
            observed.push(balance?);
        }
    }
    let deployer_left = first.balance_of(token, deployer.signer.address()).await?;
    let observed_total: U256 = observed.iter().fold(deployer_left, |sum, b| sum + *b);
    let errors = tally.errors.load(Ordering::Relaxed);
    let committed = tally.committed.load(Ordering::Relaxed);
    let wallets_ok = (errors == 0).then(|| {
        observed
            .iter()
            .zip(expected.iter())
            .all(|(seen, want)| *seen == U256::from(want.load(Ordering::Relaxed).max(0) as u64))
    });
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1_000.0;
    let per_transfer_us = |seconds: f64| seconds * 1e6 / committed.max(1) as f64;
    let cost = Cost {
        server_cpu_us: (!options.server_pids.is_empty())
            .then(|| per_transfer_us(cpu_after.0 - cpu_before.0)),
        client_cpu_us: cpu_before
            .1
            .zip(cpu_after.1)
            .map(|(before, after)| per_transfer_us(after - before)),
        floor,
    };
    Ok(Report {
        workload: format!(
            "erc20 ({} accounts, {} in flight, {} endpoints, {}% to one account, signed {})",
            options.accounts,
            options.concurrency,
            endpoints.len(),
            options.hot_fraction * 100.0,
            if options.presign { "ahead" } else { "inline" },
        ),
        committed,
        failed: tally.failed.load(Ordering::Relaxed),
        errors,
        retries: 0,
        duration_s: elapsed.as_secs_f64(),
        tps: committed as f64 / elapsed.as_secs_f64(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latencies.max() as f64 / 1_000.0,
        rpcs_per_tx: None,
        total_ok: observed_total == supply,
        wallets_ok,
        expected_total: u128::try_from(supply).unwrap_or(u128::MAX),
        observed_total: u128::try_from(observed_total).unwrap_or(u128::MAX),
        cost: Some(cost),
    })
}

/// Funding transactions: one token transfer per account, and one of ether for gas when there
/// is a base fee.
fn funding_len(accounts: usize, max_fee: u128) -> u64 {
    accounts as u64 * if max_fee > 0 { 2 } else { 1 }
}

fn setup_bar(show: bool, len: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {bar:30} {pos}/{len}") {
        bar.set_style(style);
    }
    bar
}

struct Worker {
    endpoint: Endpoint,
    owned: Vec<(usize, Account)>,
    addresses: Arc<Vec<Address>>,
    expected: Arc<Vec<AtomicI64>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    token: Address,
    fees: Fees,
    recipients: Recipients,
    started: Instant,
    options: Erc20Options,
}

/// Who receives a transfer: a random other account, or with `hot_fraction` the hot one (0).
#[derive(Clone, Copy)]
struct Recipients {
    count: usize,
    hot_fraction: f64,
}

impl Recipients {
    fn pick(&self, from: usize) -> usize {
        let mut rng = rand::rng();
        if from != HOT_ACCOUNT && self.hot_fraction > 0.0 && rng.random_bool(self.hot_fraction) {
            return HOT_ACCOUNT;
        }
        let to = rng.random_range(0..self.count - 1);
        if to >= from { to + 1 } else { to }
    }
}

/// Transfers the floor is measured over.
const FLOOR_TRANSFERS: usize = 2_000;

/// The account that receives the `hot_fraction` of transfers.
const HOT_ACCOUNT: usize = 0;

/// Transfers a run could send: the duration at this rate (more than any target reaches on
/// two cores), or the transfer limit. Signing them all takes about 30 µs each.
const PRESIGN_RATE: f64 = 10_000.0;

fn presigned_per_account(options: &Erc20Options) -> usize {
    let by_time = options.duration.as_secs_f64() * PRESIGN_RATE;
    let total = options
        .max_transfers
        .map_or(by_time, |max| (max as f64).min(by_time));
    (total / options.accounts as f64).ceil() as usize + 1
}

/// Signs `per_account` transfers for every account, on every core, with a progress bar.
fn presign(
    accounts: &mut [Account],
    per_account: usize,
    sign: impl Fn(&mut Account, usize) -> (usize, Bytes) + Sync,
    show: bool,
) {
    let bar = setup_bar(show, (accounts.len() * per_account) as u64);
    bar.set_message("signing transfers");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let size = accounts.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (index, part) in accounts.chunks_mut(size).enumerate() {
            let (sign, bar) = (&sign, &bar);
            scope.spawn(move || {
                for (offset, account) in part.iter_mut().enumerate() {
                    let from = index * size + offset;
                    for _ in 0..per_account {
                        let signed = sign(account, from);
                        account.presigned.push_back(signed);
                    }
                    bar.inc(per_account as u64);
                }
            });
        }
    });
    bar.finish_and_clear();
}

impl Worker {
    async fn run(mut self) -> Histogram<u64> {
        let mut latencies = new_histogram();
        let mut next = 0;
        while !self.stop.load(Ordering::Relaxed) && self.started.elapsed() < self.options.duration {
            if let Some(max) = self.options.max_transfers
                && self.sent.fetch_add(1, Ordering::Relaxed) >= max
            {
                break;
            }
            let slot = next % self.owned.len();
            let (from, account) = &mut self.owned[slot];
            next += 1;
            let (to, raw) = account.presigned.pop_front().unwrap_or_else(|| {
                let to = self.recipients.pick(*from);
                (
                    to,
                    account.sign_transfer(self.fees, self.token, self.addresses[to]),
                )
            });
            let began = Instant::now();
            match self.endpoint.send(&raw).await {
                Ok(()) => {
                    latencies
                        .record(began.elapsed().as_micros().max(1) as u64)
                        .ok();
                    self.tally.committed.fetch_add(1, Ordering::Relaxed);
                    self.expected[*from].fetch_sub(1, Ordering::Relaxed);
                    self.expected[to].fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    tracing::debug!(%error, "transfer failed");
                    self.tally.errors.fetch_add(1, Ordering::Relaxed);
                    // Learn where the account's nonce stands before its next transfer; what
                    // was signed ahead carries nonces that may no longer be next.
                    account.presigned.clear();
                    let address = account.signer.address();
                    if let Ok(nonce) = self
                        .endpoint
                        .quantity("eth_getTransactionCount", json!([address, "pending"]))
                        .await
                    {
                        account.nonce = nonce as u64;
                    }
                }
            }
        }
        latencies
    }
}
