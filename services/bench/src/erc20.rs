//! The ERC-20 workload over Ethereum JSON-RPC (the C++ reference's §8.1 generator): deploy an
//! OpenZeppelin token, give every account its share, then signed `transfer`s of one unit
//! between random accounts in a closed loop, one transaction in flight per worker. At the end the
//! token's total is checked, and every account's balance against the acknowledged transfers.
//!
//! Transactions pay the base fee and no tip: a tip credits the fee recipient, one account every
//! transaction would then write.

use crate::report::Report;
use crate::run::{Tally, new_histogram, progress_bar, spawn_ticker, stop_signal};
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Bytes, TxKind, U256, hex};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolValue, sol};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::Rng;
use serde_json::{Value, json};
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
const DEPLOY_GAS: u64 = 3_000_000;
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
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Erc20Error {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("{endpoint}: {message}")]
    Rpc { endpoint: String, message: String },
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
struct Fees {
    chain_id: u64,
    max_fee: u128,
}

struct Account {
    signer: PrivateKeySigner,
    nonce: u64,
}

impl Account {
    fn sign(
        &mut self,
        fees: Fees,
        to: TxKind,
        input: Vec<u8>,
        gas: u64,
    ) -> Result<Bytes, Erc20Error> {
        self.sign_with_value(fees, to, U256::ZERO, input, gas)
    }

    fn sign_with_value(
        &mut self,
        fees: Fees,
        to: TxKind,
        value: U256,
        input: Vec<u8>,
        gas: u64,
    ) -> Result<Bytes, Erc20Error> {
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
        let signature = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .map_err(|e| Erc20Error::Options(format!("signing: {e}")))?;
        self.nonce += 1;
        let envelope: TxEnvelope = tx.into_signed(signature).into();
        Ok(envelope.encoded_2718().into())
    }
}

fn token_creation_code(supply: U256) -> Result<Vec<u8>, Erc20Error> {
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
    let signer: PrivateKeySigner = key
        .trim_start_matches("0x")
        .parse()
        .map_err(|e| Erc20Error::Options(format!("deployer key: {e}")))?;
    let mut deployer = Account {
        nonce: first
            .quantity(
                "eth_getTransactionCount",
                json!([signer.address(), "pending"]),
            )
            .await? as u64,
        signer,
    };

    let setup = setup_bar(options.progress, options.accounts as u64 + 1);
    setup.set_message("deploying the token");
    let supply = U256::from(options.accounts as u64) * U256::from(SHARE);
    let token = deployer.signer.address().create(deployer.nonce);
    let raw = deployer.sign(
        fees,
        TxKind::Create,
        token_creation_code(supply)?,
        DEPLOY_GAS,
    )?;
    first.send(&raw).await?;
    setup.inc(1);
    setup.set_message("funding the accounts");
    setup.set_length(1 + funding_len(options.accounts, fees.max_fee));
    let mut accounts: Vec<Account> = (0..options.accounts)
        .map(|_| Account {
            signer: PrivateKeySigner::random(),
            nonce: 0,
        })
        .collect();
    // With a base fee, every account also needs ether for gas: enough for 5,000 transfers.
    let gas_money = U256::from(fees.max_fee) * U256::from(TRANSFER_GAS) * U256::from(5_000u64);
    // Consecutive nonces from one sender, sent without waiting: the agent orders them.
    let mut funding: Vec<Bytes> = Vec::new();
    for account in &accounts {
        let to = account.signer.address();
        let input = transferCall {
            to,
            amount: U256::from(SHARE),
        }
        .abi_encode();
        funding.push(deployer.sign(fees, TxKind::Call(token), input, TRANSFER_GAS)?);
        if !gas_money.is_zero() {
            funding.push(deployer.sign_with_value(
                fees,
                TxKind::Call(to),
                gas_money,
                Vec::new(),
                21_000,
            )?);
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
    let addresses: Arc<Vec<Address>> =
        Arc::new(accounts.iter().map(|a| a.signer.address()).collect());
    let sent = Arc::new(AtomicU64::new(0));
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
    Ok(Report {
        workload: format!(
            "erc20 ({} accounts, {} in flight, {} endpoints)",
            options.accounts,
            options.concurrency,
            endpoints.len()
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
    started: Instant,
    options: Erc20Options,
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
            let to = {
                let mut rng = rand::rng();
                let mut to = rng.random_range(0..self.addresses.len() - 1);
                if to >= *from {
                    to += 1;
                }
                to
            };
            let input = transferCall {
                to: self.addresses[to],
                amount: U256::from(1),
            }
            .abi_encode();
            let Ok(raw) = account.sign(self.fees, TxKind::Call(self.token), input, TRANSFER_GAS)
            else {
                self.tally.errors.fetch_add(1, Ordering::Relaxed);
                break;
            };
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
                    // Learn where the account's nonce stands before its next transfer.
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
