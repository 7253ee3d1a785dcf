//! The EVM rail on alloy: one configured chain (Ethereum L1 or any EVM L2, by configuration
//! alone), EIP-1559 transactions signed locally, nonces owned by railyard, native ETH and
//! ERC-20 batches in ONE transaction through the `BatchTransfer` contract
//! (`contracts/BatchTransfer.sol`), receipts with confirmation depth, reorg detection, and
//! replacements (fee bump, cancel) that reuse the nonce.
//!
//! Every call to the node has a timeout; nothing here retries or sleeps.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::consensus::{SignableTransaction, Transaction as _, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::{Decodable2718, Encodable2718};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address as EvmAddress, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::rpc::types::{BlockNumberOrTag, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use async_trait::async_trait;
use model::{Address, Amount, Asset, RailId, SignedTx, Spend};
use zeroize::Zeroizing;

mod spender;

use crate::{Batch, Capabilities, FeeDetail, FeeQuote, Health, Observation, Rail, RailError, Watch, check_batch};

alloy::sol! {
    function sendEther(address[] recipients, uint256[] amounts) payable;
    function sendToken(address token, address[] recipients, uint256[] amounts);
    function transfer(address to, uint256 value) returns (bool);
    function approve(address spender, uint256 value) returns (bool);
    function balanceOf(address owner) view returns (uint256);
}

/// The deployment bytecode of `contracts/BatchTransfer.sol`, checked against a fresh solc
/// compile by `tools/compile-contracts.js --check` in `scripts/test`.
pub const BATCH_TRANSFER_BYTECODE: &str = include_str!("../../../../contracts/out/BatchTransfer.bin");

/// Gas of a plain ETH transfer, used by cancels.
const TRANSFER_GAS: u64 = 21_000;
/// Replacements must raise both fee fields by at least this many eighths (12.5%, above
/// geth's and anvil's 10% replacement rule).
const BUMP_EIGHTHS: u128 = 9;

/// A private key. Its `Debug` prints `***`, and its bytes are zeroed when dropped.
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// From 64 hex digits, with or without `0x`.
    pub fn from_hex(text: &str) -> Result<SecretKey, RailError> {
        let hex = text.trim().trim_start_matches("0x");
        let bad = || RailError::Config("a private key is 64 hex digits".into());
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(SecretKey(bytes))
    }

    /// From the environment variable `name`.
    pub fn from_env(name: &str) -> Result<SecretKey, RailError> {
        let value = Zeroizing::new(
            std::env::var(name)
                .map_err(|_| RailError::Config(format!("environment variable {name} holds no private key")))?,
        );
        SecretKey::from_hex(&value)
    }

    /// From an encrypted JSON keystore (the Web3 Secret Storage format geth and foundry use).
    pub fn from_keystore(path: &std::path::Path, password: &str) -> Result<SecretKey, RailError> {
        let signer = PrivateKeySigner::decrypt_keystore(path, password)
            .map_err(|e| RailError::Config(format!("cannot decrypt keystore {}: {e}", path.display())))?;
        Ok(SecretKey(Zeroizing::new(signer.to_bytes().0)))
    }

    /// The address this key signs for.
    pub fn address(&self) -> Result<[u8; 20], RailError> {
        Ok(self.signer()?.address().into_array())
    }

    fn signer(&self) -> Result<PrivateKeySigner, RailError> {
        PrivateKeySigner::from_slice(self.0.as_slice())
            .map_err(|e| RailError::Config(format!("invalid private key: {e}")))
    }
}

/// An ERC-20 the rail carries (from the stablecoin registry in configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub asset: Asset,
    pub address: [u8; 20],
}

/// One stablecoin of the registry in configuration: its symbol and decimals, and its token
/// contract per network (by network name: `ethereum`, `base`, `evm:31337`, ...).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stablecoin {
    pub symbol: String,
    pub decimals: u8,
    pub addresses: std::collections::BTreeMap<String, String>,
}

/// The tokens the registry lists for `network`, validated; an error names the bad entry.
pub fn tokens_for(registry: &[Stablecoin], network: model::Network) -> Result<Vec<Token>, RailError> {
    let mut tokens = Vec::new();
    for (i, coin) in registry.iter().enumerate() {
        let asset =
            Asset::new(&coin.symbol, coin.decimals).map_err(|e| RailError::Config(format!("stablecoins[{i}]: {e}")))?;
        if registry[..i].iter().any(|other| other.symbol == coin.symbol) {
            return Err(RailError::Config(format!("stablecoins[{i}].symbol: {} is listed twice", coin.symbol)));
        }
        for (name, text) in &coin.addresses {
            let key = format!("stablecoins[{i}].addresses.{name}");
            let listed: model::Network = name.parse().map_err(|e| RailError::Config(format!("{key}: {e}")))?;
            if listed != network {
                continue;
            }
            match Address::parse(text, network) {
                Ok(Address::Evm(address)) => tokens.push(Token { asset, address }),
                Ok(Address::Bitcoin { .. }) => {
                    return Err(RailError::Config(format!("{key}: a token lives on an EVM chain")));
                }
                Err(e) => return Err(RailError::Config(format!("{key}: {e}"))),
            }
        }
    }
    Ok(tokens)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmConfig {
    pub rail: RailId,
    pub chain_id: u64,
    pub rpc_url: String,
    pub batch_contract: [u8; 20],
    pub tokens: Vec<Token>,
    pub confirmations_final: u32,
    pub batch_size_max: usize,
    pub amount_min: Amount,
    pub amount_max: Amount,
    pub finality_expected_ms: u64,
    /// The most one settlement may cost in wei (gas limit × max fee per gas).
    pub fee_cap_wei: u128,
    /// The highest max fee per gas railyard will offer.
    pub max_fee_per_gas_cap: u128,
    pub priority_fee_per_gas: u128,
    /// Gas limit = estimate × (100 + margin) / 100.
    pub gas_margin_percent: u64,
    pub request_timeout: Duration,
    /// How many recent blocks are searched for the transaction that spent a settlement's
    /// nonce. An ordinary node keeps the state of recent blocks only (geth: 128), so the
    /// search never asks for older state; past the window the settlement is held instead.
    pub nonce_search_blocks: u64,
}

pub struct EvmRail {
    config: EvmConfig,
    capabilities: Capabilities,
    signer: PrivateKeySigner,
    provider: RootProvider,
    next_nonce: Mutex<u64>,
    /// Whether the chain id was checked and the pending nonce read (see `ensure_connected`).
    connected: AtomicBool,
}

impl fmt::Debug for EvmRail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmRail")
            .field("rail", &self.config.rail)
            .field("chain_id", &self.config.chain_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl fmt::Display) -> RailError {
    RailError::Unavailable(error.to_string())
}

impl EvmRail {
    /// Connects, checks the node's chain id against the configuration, and reads the sender's
    /// pending nonce (from then on railyard hands nonces out itself).
    pub async fn connect(config: EvmConfig, key: &SecretKey) -> Result<EvmRail, RailError> {
        let rail = EvmRail::new(config, key)?;
        rail.ensure_connected().await?;
        Ok(rail)
    }

    /// The rail without talking to its node yet: it connects on first use (see
    /// `ensure_connected`), so a node that is down when railyard starts makes that rail
    /// unavailable, not the whole service.
    pub fn new(config: EvmConfig, key: &SecretKey) -> Result<EvmRail, RailError> {
        let url =
            config.rpc_url.parse().map_err(|e| RailError::Config(format!("rpc_url {:?}: {e}", config.rpc_url)))?;
        let provider = RootProvider::new_http(url);
        let signer = key.signer()?;
        let mut assets = vec![Asset::ETH];
        assets.extend(config.tokens.iter().map(|t| t.asset));
        let capabilities = Capabilities {
            rail: config.rail,
            network: model::Network::Evm(model::ChainId(config.chain_id)),
            fee_asset: Asset::ETH,
            assets,
            amount_min: config.amount_min,
            amount_max: config.amount_max,
            batch_size_max: config.batch_size_max,
            confirmations_final: config.confirmations_final,
            can_replace: true,
            finality_expected_ms: config.finality_expected_ms,
        };
        Ok(EvmRail {
            config,
            capabilities,
            signer,
            provider,
            next_nonce: Mutex::new(0),
            connected: AtomicBool::new(false),
        })
    }

    /// Checks the node's chain id and learns the sender's pending nonce, once. A node on
    /// another chain is a configuration error; one that does not answer is unavailable (tried
    /// again on the next call).
    pub async fn ensure_connected(&self) -> Result<(), RailError> {
        if self.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        let chain_id = self.timed(self.provider.get_chain_id()).await?;
        if chain_id != self.config.chain_id {
            return Err(RailError::Config(format!(
                "rail {} expects chain id {} but the node is on {chain_id}",
                self.config.rail, self.config.chain_id
            )));
        }
        let nonce = self.timed(self.provider.get_transaction_count(self.signer.address()).pending()).await?;
        self.ensure_next_nonce_at_least(nonce);
        self.connected.store(true, Ordering::Release);
        Ok(())
    }

    async fn timed<T, E: fmt::Display>(
        &self,
        call: impl std::future::IntoFuture<Output = Result<T, E>>,
    ) -> Result<T, RailError> {
        match tokio::time::timeout(self.config.request_timeout, call.into_future()).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(RailError::Unavailable(format!("no answer within {:?}", self.config.request_timeout))),
        }
    }

    pub fn sender(&self) -> [u8; 20] {
        self.signer.address().into_array()
    }

    /// After a restart, the engine raises the nonce to one past the highest it journaled.
    pub fn ensure_next_nonce_at_least(&self, nonce: u64) {
        let mut next = self.next_nonce.lock().expect("nonce lock");
        *next = (*next).max(nonce);
    }

    fn take_nonce(&self) -> u64 {
        let mut next = self.next_nonce.lock().expect("nonce lock");
        let nonce = *next;
        *next += 1;
        nonce
    }

    fn token(&self, asset: Asset) -> Result<EvmAddress, RailError> {
        self.config
            .tokens
            .iter()
            .find(|t| t.asset == asset)
            .map(|t| EvmAddress::from(t.address))
            .ok_or_else(|| RailError::InvalidBatch(format!("rail {} has no token for {asset}", self.config.rail)))
    }

    /// The call that pays `batch`: (to, value, calldata).
    fn call_for(&self, batch: &Batch) -> Result<(EvmAddress, U256, Bytes), RailError> {
        let mut recipients = Vec::with_capacity(batch.payouts.len());
        let mut amounts = Vec::with_capacity(batch.payouts.len());
        for payout in &batch.payouts {
            let Address::Evm(bytes) = payout.destination else {
                return Err(RailError::InvalidBatch(format!("payment {} has no EVM destination", payout.payment)));
            };
            recipients.push(EvmAddress::from(bytes));
            amounts.push(U256::from(payout.amount.units()));
        }
        let contract = EvmAddress::from(self.config.batch_contract);
        if batch.asset == Asset::ETH {
            let total = Amount::try_sum(batch.payouts.iter().map(|p| p.amount))
                .map_err(|e| RailError::InvalidBatch(e.to_string()))?;
            let data = sendEtherCall { recipients, amounts }.abi_encode();
            Ok((contract, U256::from(total.units()), data.into()))
        } else {
            let data = sendTokenCall { token: self.token(batch.asset)?, recipients, amounts }.abi_encode();
            Ok((contract, U256::ZERO, data.into()))
        }
    }

    /// Fee fields for `gas_limit` at the current base fee, within the caps.
    async fn fees(&self, gas_limit: u64) -> Result<FeeQuote, RailError> {
        let block = self
            .timed(self.provider.get_block_by_number(BlockNumberOrTag::Latest))
            .await?
            .ok_or_else(|| RailError::Unavailable("the node has no latest block".into()))?;
        let base = u128::from(block.header.base_fee_per_gas.unwrap_or(0));
        let priority = self.config.priority_fee_per_gas;
        let wanted = base.saturating_mul(2).saturating_add(priority);
        let max_fee_per_gas = wanted.min(self.config.max_fee_per_gas_cap);
        if max_fee_per_gas < base.saturating_add(priority) {
            let fee = Amount::new(u128::from(gas_limit).saturating_mul(base.saturating_add(priority)));
            return Err(RailError::FeeAboveCap { fee, cap: Amount::new(self.config.fee_cap_wei) });
        }
        self.quote_with(gas_limit, max_fee_per_gas, priority.min(max_fee_per_gas))
    }

    fn quote_with(
        &self,
        gas_limit: u64,
        max_fee_per_gas: u128,
        max_priority_fee_per_gas: u128,
    ) -> Result<FeeQuote, RailError> {
        let fee_max = u128::from(gas_limit)
            .checked_mul(max_fee_per_gas)
            .map(Amount::new)
            .ok_or(RailError::FeeAboveCap { fee: Amount::MAX, cap: Amount::new(self.config.fee_cap_wei) })?;
        if fee_max.units() > self.config.fee_cap_wei {
            return Err(RailError::FeeAboveCap { fee: fee_max, cap: Amount::new(self.config.fee_cap_wei) });
        }
        Ok(FeeQuote { fee_max, detail: FeeDetail::Evm { gas_limit, max_fee_per_gas, max_priority_fee_per_gas } })
    }

    fn sign(
        &self,
        nonce: u64,
        to: EvmAddress,
        value: U256,
        input: Bytes,
        fee: &FeeQuote,
    ) -> Result<SignedTx, RailError> {
        let FeeDetail::Evm { gas_limit, max_fee_per_gas, max_priority_fee_per_gas } = fee.detail else {
            return Err(RailError::InvalidBatch("a sandbox fee quote was given to an EVM rail".into()));
        };
        let mut tx = TxEip1559 {
            chain_id: self.config.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input,
        };
        let signature = self
            .signer
            .sign_transaction_sync(&mut tx)
            .map_err(|e| RailError::Config(format!("signing failed: {e}")))?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(SignedTx {
            txid: envelope.tx_hash().0,
            raw: envelope.encoded_2718(),
            spend: Spend::Nonce { sender: self.sender(), nonce },
            fee: fee.fee_max,
        })
    }

    /// A replacement fee: at least the quote, and at least 12.5% above `previous` on both
    /// fields, still within the caps.
    fn replacement_fee(
        &self,
        previous: &SignedTx,
        quote: &FeeQuote,
        gas_limit: u64,
    ) -> Result<(u64, FeeQuote), RailError> {
        let old = TxEnvelope::decode_2718(&mut previous.raw.as_slice())
            .map_err(|e| RailError::Rejected(format!("cannot decode the previous version: {e}")))?;
        let Spend::Nonce { nonce, .. } = previous.spend else {
            return Err(RailError::Rejected("the previous version does not spend a nonce".into()));
        };
        let FeeDetail::Evm { max_fee_per_gas, max_priority_fee_per_gas, .. } = quote.detail else {
            return Err(RailError::InvalidBatch("a sandbox fee quote was given to an EVM rail".into()));
        };
        let bumped = |old: u128| old.saturating_mul(BUMP_EIGHTHS).div_ceil(8);
        let tip = max_priority_fee_per_gas.max(bumped(old.max_priority_fee_per_gas().unwrap_or(0)));
        let cap = max_fee_per_gas.max(bumped(old.max_fee_per_gas())).max(tip);
        if cap > self.config.max_fee_per_gas_cap {
            let fee = Amount::new(u128::from(gas_limit).saturating_mul(cap));
            return Err(RailError::FeeAboveCap { fee, cap: Amount::new(self.config.fee_cap_wei) });
        }
        Ok((nonce, self.quote_with(gas_limit, cap, tip)?))
    }

    /// Reads `owner`'s balance of `token` (tests and reconciliation).
    pub async fn token_balance(&self, token: [u8; 20], owner: [u8; 20]) -> Result<U256, RailError> {
        let call = TransactionRequest::default()
            .to(EvmAddress::from(token))
            .input(balanceOfCall { owner: EvmAddress::from(owner) }.abi_encode().into());
        let bytes = self.timed(self.provider.call(call)).await?;
        balanceOfCall::abi_decode_returns(&bytes).map_err(|e| RailError::Rejected(format!("balanceOf answer: {e}")))
    }

    pub async fn native_balance(&self, owner: [u8; 20]) -> Result<U256, RailError> {
        self.timed(self.provider.get_balance(EvmAddress::from(owner))).await
    }

    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// Whether block `hash` is on the canonical chain.
    async fn canonical(&self, number: u64, hash: [u8; 32]) -> Result<bool, RailError> {
        let block = self.timed(self.provider.get_block_by_number(BlockNumberOrTag::Number(number))).await?;
        Ok(block.is_some_and(|b| b.header.hash.0 == hash))
    }
}

#[async_trait]
impl Rail for EvmRail {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError> {
        check_batch(&self.capabilities, batch)?;
        self.ensure_connected().await?;
        let (to, value, input) = self.call_for(batch)?;
        let request = TransactionRequest::default().from(self.signer.address()).to(to).value(value).input(input.into());
        let estimate = self.timed(self.provider.estimate_gas(request)).await?;
        let gas_limit = estimate.saturating_mul(100 + self.config.gas_margin_percent) / 100;
        self.fees(gas_limit).await
    }

    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.capabilities, batch)?;
        // A nonce is handed out only once the chain's own is known, and never below the
        // account's pending nonce now: a transaction railyard did not sign (someone else used
        // the hot wallet) would otherwise make the next settlement collide with it and die.
        self.ensure_connected().await?;
        let pending = self.timed(self.provider.get_transaction_count(self.signer.address()).pending()).await?;
        self.ensure_next_nonce_at_least(pending);
        let (to, value, input) = self.call_for(batch)?;
        self.sign(self.take_nonce(), to, value, input, fee)
    }

    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError> {
        match tokio::time::timeout(self.config.request_timeout, self.provider.send_raw_transaction(&tx.raw)).await {
            Err(_) => Err(RailError::Unavailable(format!("no answer within {:?}", self.config.request_timeout))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => {
                let text = error.to_string();
                let lower = text.to_lowercase();
                // The same bytes again, or bytes whose nonce is already spent: harmless; the
                // watcher tells which version (if any) was mined.
                if lower.contains("already known")
                    || lower.contains("nonce too low")
                    || lower.contains("already imported")
                {
                    Ok(())
                } else if error.is_error_resp() {
                    Err(RailError::Rejected(text))
                } else {
                    Err(RailError::Unavailable(text))
                }
            }
        }
    }

    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError> {
        let head = self.timed(self.provider.get_block_number()).await?;
        for version in &watch.versions {
            let receipt = self.timed(self.provider.get_transaction_receipt(version.txid.into())).await?;
            let Some(receipt) = receipt else { continue };
            let (Some(number), Some(block)) = (receipt.block_number, receipt.block_hash) else { continue };
            if !self.canonical(number, block.0).await? {
                continue;
            }
            let depth = head.saturating_sub(number) + 1;
            let (txid, block) = (version.txid, block.0);
            // What the chain charged, from the receipt: gas used times the effective price
            // (below the offered maximum whenever the base fee is below it).
            let fee_paid = u128::from(receipt.gas_used)
                .checked_mul(receipt.effective_gas_price)
                .map(Amount::new)
                .ok_or_else(|| RailError::Rejected("the receipt's fee overflows u128".into()))?;
            return Ok(if receipt.status() {
                Observation::Confirmed { txid, block, depth, fee_paid }
            } else {
                Observation::Reverted { txid, block, depth, fee_paid }
            });
        }
        if watch.seen_in_block.is_some() {
            return Ok(Observation::ReorgedOut);
        }
        let nonce = watch.versions.iter().find_map(|v| match v.spend {
            Spend::Nonce { nonce, .. } => Some(nonce),
            Spend::Inputs(_) => None,
        });
        if let Some(nonce) = nonce {
            let mined = self.timed(self.provider.get_transaction_count(self.signer.address()).latest()).await?;
            if mined > nonce {
                let block = match self.block_spending(nonce, head).await? {
                    Ok(block) => block,
                    Err(why) => return Ok(Observation::SpenderUnknown { reason: why }),
                };
                let by = self.spender_in(block, nonce).await?;
                return Ok(Observation::Replaced { by, depth: head.saturating_sub(block) + 1 });
            }
        }
        for version in &watch.versions {
            if self.timed(self.provider.get_transaction_by_hash(version.txid.into())).await?.is_some() {
                return Ok(Observation::Pending);
            }
        }
        Ok(Observation::Dropped)
    }

    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.capabilities, batch)?;
        let FeeDetail::Evm { gas_limit, .. } = fee.detail else {
            return Err(RailError::InvalidBatch("a sandbox fee quote was given to an EVM rail".into()));
        };
        let (nonce, fee) = self.replacement_fee(previous, fee, gas_limit)?;
        let (to, value, input) = self.call_for(batch)?;
        self.sign(nonce, to, value, input, &fee)
    }

    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        let (nonce, fee) = self.replacement_fee(previous, fee, TRANSFER_GAS)?;
        self.sign(nonce, self.signer.address(), U256::ZERO, Bytes::new(), &fee)
    }

    async fn balance_of(&self, destination: &Address, asset: Asset) -> Result<Amount, RailError> {
        let Address::Evm(owner) = destination else {
            return Err(RailError::InvalidBatch("an EVM rail holds only EVM addresses".into()));
        };
        let balance = if asset == Asset::ETH {
            self.native_balance(*owner).await?
        } else {
            self.token_balance(self.token(asset)?.into_array(), *owner).await?
        };
        u128::try_from(balance).map(Amount::new).map_err(|_| RailError::Rejected("balance exceeds u128".into()))
    }

    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError> {
        let sender = self.sender();
        let highest = spends
            .iter()
            .filter_map(|spend| match spend {
                Spend::Nonce { sender: s, nonce } if *s == sender => Some(*nonce),
                _ => None,
            })
            .max();
        if let Some(nonce) = highest {
            self.ensure_next_nonce_at_least(nonce + 1);
        }
        Ok(())
    }

    async fn health(&self) -> Health {
        if self.ensure_connected().await.is_err() {
            return Health::Down;
        }
        match self.timed(self.provider.get_block_number()).await {
            Ok(head) => Health::Up { head },
            Err(_) => Health::Down,
        }
    }
}
