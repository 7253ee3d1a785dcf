//! The Bitcoin L1 rail: BTC payouts from a BDK hot wallet, through Bitcoin Core's JSON-RPC.
//!
//! One transaction per settlement: an output per payout, in the batch's order, plus change.
//! The fee rate is the node's estimate for the batch's confirmation target (from its tightest
//! deadline), capped by configuration, with a fallback when the node has no estimate. Every
//! version signals BIP 125; a bump is a replacement spending the same inputs (it may add
//! inputs), a cancel is a replacement sending them back to the wallet, and CPFP spends the
//! change of a parent that cannot be replaced. What a version spends is journaled before it is
//! broadcast (`Spend::Inputs`), and after a restart `recover_spends` reserves those inputs.
//!
//! Status comes from the wallet's view of the best chain (blocks fetched from the node, so a
//! node without `-txindex` serves) and the node's mempool: confirmed at depth N, replaced by a
//! confirmed conflict (which one), reorged out, pending, or dropped. Transaction and block ids
//! are kept in the byte order they are displayed in (as explorers and Core's RPC print them).

mod rpc;
mod wallet;

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bdk_wallet::bitcoin::bip32::Xpriv;
use bdk_wallet::bitcoin::consensus::encode::{deserialize, deserialize_hex, serialize};
use bdk_wallet::bitcoin::hashes::Hash as _;
use bdk_wallet::bitcoin::hex::DisplayHex as _;
use bdk_wallet::bitcoin::{
    self as bitcoin, Amount as Sats, Block, FeeRate, NetworkKind, OutPoint, ScriptBuf, Transaction, Txid,
};
use bdk_wallet::chain::BlockId;
use bdk_wallet::template::Bip84;
use bdk_wallet::{KeychainKind, Wallet};
use model::{Address, Amount, Asset, BitcoinNetwork, RailId, SignedTx, Spend};
use serde_json::json;
use zeroize::Zeroizing;

pub use rpc::RpcAuth;
use rpc::{CoreRpc, RpcFailure};
use wallet::{Draft, DraftFee, HotWallet};

use crate::{Batch, Capabilities, FeeDetail, FeeQuote, Health, Observation, Rail, RailError, Watch, check_batch};

/// The largest dust threshold of a standard output (P2PKH, at Core's 3 sat/vB dust relay
/// rate): no payout below it is carried, whatever its script.
pub const DUST_MAX_SATS: u128 = 546;
/// Core's default incremental relay fee, 1 sat/vB, in sat/kvB: what a replacement must add.
const INCREMENTAL_SAT_KVB: u64 = 1_000;
/// Core's minimum relay fee.
const MIN_RELAY_SAT_KVB: u64 = 1_000;
/// What one more P2WPKH input adds, in vbytes (the quote's headroom for coin selection).
const INPUT_VBYTES: u64 = 68;
/// How many blocks the wallet fetches in one sync; past that it catches up on later calls.
const SYNC_BLOCKS_MAX: u32 = 500;
/// How far back a reorg is followed before the rail reports it as a fault.
const REORG_DEPTH_MAX: usize = 288;
/// How many scripts past the last used one the wallet watches on each keychain.
const LOOKAHEAD: u32 = 1_000;

/// The hot wallet's extended private key (xprv on mainnet, tprv elsewhere). `Debug` prints
/// `***`; the text is zeroed when dropped (BDK keeps its own copy for signing).
pub struct WalletKey(Zeroizing<String>);

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WalletKey(***)")
    }
}

impl WalletKey {
    pub fn new(text: &str) -> WalletKey {
        WalletKey(Zeroizing::new(text.trim().to_owned()))
    }

    /// From the environment variable `name`.
    pub fn from_env(name: &str) -> Result<WalletKey, RailError> {
        let value =
            Zeroizing::new(std::env::var(name).map_err(|_| {
                RailError::Config(format!("environment variable {name} holds no extended private key"))
            })?);
        Ok(WalletKey::new(&value))
    }

    fn xpriv(&self, network: BitcoinNetwork) -> Result<Xpriv, RailError> {
        let key = Xpriv::from_str(&self.0)
            .map_err(|_| RailError::Config("the wallet key is not an extended private key (xprv/tprv)".into()))?;
        let expected = if network == BitcoinNetwork::Mainnet { NetworkKind::Main } else { NetworkKind::Test };
        if key.network != expected {
            return Err(RailError::Config(format!("the wallet key is for another network than {network:?}")));
        }
        Ok(key)
    }
}

#[derive(Clone, Debug)]
pub struct BitcoinConfig {
    pub rail: RailId,
    pub network: BitcoinNetwork,
    pub rpc_url: String,
    pub auth: RpcAuth,
    pub confirmations_final: u32,
    pub batch_size_max: usize,
    /// At least `DUST_MAX_SATS`.
    pub amount_min: Amount,
    pub amount_max: Amount,
    pub finality_expected_ms: u64,
    /// The highest fee rate railyard offers, in sat/vB (estimates above it are capped).
    pub fee_rate_max_sat_vb: u64,
    /// The rate used when the node has no estimate (a young chain), in sat/vB.
    pub fee_rate_fallback_sat_vb: u64,
    /// The most one settlement may cost, in satoshis.
    pub fee_cap_sats: u64,
    /// The confirmation target, in blocks, of a batch with no deadline.
    pub target_blocks_default: u16,
    pub request_timeout: Duration,
    /// The first block the wallet reads (0: from genesis). The wallet's coins must all be
    /// received at or after it: on mainnet, the height at which the key was made, so a start
    /// reads the chain since then instead of since 2009.
    pub birth_height: u32,
}

pub struct BitcoinRail {
    config: BitcoinConfig,
    capabilities: Capabilities,
    rpc: CoreRpc,
    wallet: Mutex<HotWallet>,
    /// One sync at a time (the wallet lock is not held across the node's answers).
    syncing: tokio::sync::Mutex<()>,
}

impl fmt::Debug for BitcoinRail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BitcoinRail")
            .field("rail", &self.config.rail)
            .field("network", &self.config.network)
            .finish_non_exhaustive()
    }
}

/// A txid or block hash as railyard keeps it: in display byte order.
fn display_bytes<H: bitcoin::hashes::Hash<Bytes = [u8; 32]>>(hash: H) -> [u8; 32] {
    let mut bytes = hash.to_byte_array();
    bytes.reverse();
    bytes
}

fn txid_of(bytes: [u8; 32]) -> Txid {
    let mut internal = bytes;
    internal.reverse();
    Txid::from_byte_array(internal)
}

fn outpoints(spend: &Spend) -> Result<Vec<OutPoint>, RailError> {
    match spend {
        Spend::Inputs(inputs) => {
            Ok(inputs.iter().map(|(txid, vout)| OutPoint { txid: txid_of(*txid), vout: *vout }).collect())
        }
        Spend::Nonce { .. } => Err(RailError::Rejected("the previous version spends a nonce, not inputs".into())),
    }
}

fn sats(amount: Amount) -> Result<Sats, RailError> {
    u64::try_from(amount.units())
        .map(Sats::from_sat)
        .map_err(|_| RailError::InvalidBatch("amount exceeds u64 satoshis".into()))
}

fn rate_kvb(detail: &FeeDetail) -> Result<u64, RailError> {
    match detail {
        FeeDetail::Bitcoin { sat_per_kvb, .. } => Ok(*sat_per_kvb),
        _ => Err(RailError::InvalidBatch("a fee quote of another rail was given to a Bitcoin rail".into())),
    }
}

fn fee_rate(sat_per_kvb: u64) -> FeeRate {
    FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4))
}

impl BitcoinRail {
    /// The rail without talking to its node yet (it syncs on first use), so a node that is
    /// down when railyard starts makes this rail unavailable, not the service.
    pub fn new(config: BitcoinConfig, key: &WalletKey) -> Result<BitcoinRail, RailError> {
        if config.amount_min.units() < DUST_MAX_SATS {
            return Err(RailError::Config(format!(
                "amount_min must be at least {DUST_MAX_SATS} satoshis (the largest dust threshold)"
            )));
        }
        if config.fee_rate_max_sat_vb == 0 || config.fee_rate_fallback_sat_vb == 0 {
            return Err(RailError::Config("fee rates must be at least 1 sat/vB".into()));
        }
        let xpriv = key.xpriv(config.network)?;
        let wallet = Wallet::create(Bip84(xpriv, KeychainKind::External), Bip84(xpriv, KeychainKind::Internal))
            .network(config.network.to_bitcoin())
            .lookahead(LOOKAHEAD)
            .create_wallet_no_persist()
            .map_err(|e| RailError::Config(format!("the wallet's descriptors: {e}")))?;
        let rpc = CoreRpc::new(&config.rpc_url, config.auth.clone(), config.request_timeout)?;
        let capabilities = Capabilities {
            rail: config.rail,
            network: model::Network::Bitcoin(config.network),
            fee_asset: Asset::BTC,
            assets: vec![Asset::BTC],
            amount_min: config.amount_min,
            amount_max: config.amount_max,
            batch_size_max: config.batch_size_max,
            confirmations_final: config.confirmations_final,
            can_replace: true,
            finality_expected_ms: config.finality_expected_ms,
        };
        Ok(BitcoinRail {
            config,
            capabilities,
            rpc,
            wallet: Mutex::new(HotWallet::new(wallet)),
            syncing: tokio::sync::Mutex::new(()),
        })
    }

    fn wallet(&self) -> std::sync::MutexGuard<'_, HotWallet> {
        self.wallet.lock().expect("wallet lock")
    }

    /// An address of the hot wallet to fund it (a new one each call).
    pub fn receive_address(&self) -> String {
        self.wallet().wallet.reveal_next_address(KeychainKind::External).address.to_string()
    }

    /// The wallet's confirmed balance after a sync, in satoshis.
    pub async fn wallet_balance(&self) -> Result<u64, RailError> {
        self.sync().await?;
        Ok(self.wallet().wallet.balance().confirmed.to_sat())
    }

    /// Brings the wallet to the node's best chain, following reorgs; returns the tip height.
    async fn sync(&self) -> Result<u32, RailError> {
        let _one = self.syncing.lock().await;
        let best: String = self.rpc.call("getbestblockhash", json!([])).await?;
        let (tip, checkpoints) = {
            let wallet = self.wallet();
            (wallet.tip(), wallet.checkpoints(REORG_DEPTH_MAX))
        };
        if tip.hash.to_string() == best {
            return Ok(tip.height);
        }
        let mut fork = None;
        for checkpoint in checkpoints {
            match self.rpc.call::<String>("getblockhash", json!([checkpoint.height])).await {
                Ok(hash) if hash == checkpoint.hash.to_string() => {
                    fork = Some(checkpoint);
                    break;
                }
                Ok(_) => {}
                // Above the node's tip (its chain is shorter now): look lower.
                Err(RpcFailure::Error { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let fork = fork.ok_or_else(|| {
            RailError::Unavailable(format!(
                "the node's chain shares none of the wallet's last {REORG_DEPTH_MAX} blocks (another network, or a deeper reorg)"
            ))
        })?;
        let height: u32 = self.rpc.call("getblockcount", json!([])).await?;
        // A wallet that has read nothing yet starts at its birth height, connected to genesis.
        let from = if fork.height == 0 { self.config.birth_height.max(1) } else { fork.height + 1 };
        let until = height.min(from.saturating_add(SYNC_BLOCKS_MAX - 1));
        let mut connected_to = fork;
        for at in from..=until {
            let hash: String = self.rpc.call("getblockhash", json!([at])).await?;
            let raw: String = self.rpc.call("getblock", json!([hash, 0])).await?;
            let block: Block = deserialize_hex(&raw)
                .map_err(|e| RailError::Unavailable(format!("block {at} from the node does not decode: {e}")))?;
            self.wallet().apply(&block, at, connected_to)?;
            connected_to = BlockId { height: at, hash: block.block_hash() };
        }
        let mut wallet = self.wallet();
        wallet.prune();
        if until < height {
            return Err(RailError::Unavailable(format!(
                "the wallet is catching up with the chain: block {until} of {height}"
            )));
        }
        Ok(until)
    }

    /// The fee rate for `batch`, in sat/kvB: the node's estimate for its confirmation target,
    /// or the fallback; within [1 sat/vB, the cap].
    async fn rate_for(&self, batch: &Batch) -> Result<u64, RailError> {
        let target = match batch.within_ms {
            // Ten minutes a block, at least the next one, at most Core's longest target.
            Some(ms) => u16::try_from((ms / 600_000).clamp(1, 1008)).unwrap_or(1008),
            None => self.config.target_blocks_default.max(1),
        };
        let answer = self.rpc.call_value("estimatesmartfee", json!([target])).await.map_err(RailError::from)?;
        let estimate = answer
            .get("feerate")
            .and_then(serde_json::Value::as_f64)
            .and_then(|btc_per_kvb| Sats::from_btc(btc_per_kvb).ok())
            .map(Sats::to_sat);
        let rate = estimate.unwrap_or(self.config.fee_rate_fallback_sat_vb.saturating_mul(1_000));
        Ok(rate.clamp(MIN_RELAY_SAT_KVB, self.config.fee_rate_max_sat_vb.saturating_mul(1_000)))
    }

    fn recipients(&self, batch: &Batch) -> Result<Vec<(ScriptBuf, Sats)>, RailError> {
        let network = self.config.network.to_bitcoin();
        batch
            .payouts
            .iter()
            .map(|payout| {
                let Address::Bitcoin { text, .. } = &payout.destination else {
                    return Err(RailError::InvalidBatch(format!(
                        "payment {} has no Bitcoin destination",
                        payout.payment
                    )));
                };
                let address =
                    bitcoin::Address::from_str(text).ok().and_then(|a| a.require_network(network).ok()).ok_or_else(
                        || RailError::InvalidBatch(format!("payment {} destination is not valid here", payout.payment)),
                    )?;
                Ok((address.script_pubkey(), sats(payout.amount)?))
            })
            .collect()
    }

    /// A fee within the configured cap and, when given, the quote's maximum.
    fn check_fee(&self, fee: Sats, quoted_max: Option<Amount>) -> Result<(), RailError> {
        let mut cap = Amount::new(u128::from(self.config.fee_cap_sats));
        if let Some(max) = quoted_max {
            cap = cap.min(max);
        }
        let fee = Amount::new(u128::from(fee.to_sat()));
        if fee > cap {
            return Err(RailError::FeeAboveCap { fee, cap });
        }
        Ok(())
    }

    /// Signs `draft`, reserves what it spends, and returns it as railyard journals it. For a
    /// replacement of `previous`, also makes sure it pays what BIP 125 asks (the old fee plus
    /// 1 sat/vB of its own size), building it again at that absolute fee when the rate fell
    /// short.
    fn sign(
        &self,
        mut draft: Draft<'_>,
        previous: Option<&SignedTx>,
        fee_max: Option<Amount>,
    ) -> Result<SignedTx, RailError> {
        let mut wallet = self.wallet();
        let (mut tx, mut fee) = wallet.create(&draft, false)?;
        if let Some(previous) = previous {
            let needed = u64::try_from(previous.fee.units())
                .unwrap_or(u64::MAX)
                .saturating_add(tx.vsize() as u64 * INCREMENTAL_SAT_KVB / 1_000);
            if fee.to_sat() < needed {
                wallet.forget(&tx);
                draft.fee = DraftFee::Absolute(Sats::from_sat(needed));
                (tx, fee) = wallet.create(&draft, false)?;
            }
        }
        if let Err(error) = self.check_fee(fee, fee_max) {
            wallet.forget(&tx);
            return Err(error);
        }
        let inputs: Vec<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
        wallet.reserve(inputs.iter().copied());
        Ok(SignedTx {
            txid: display_bytes(tx.compute_txid()),
            raw: serialize(&tx),
            spend: Spend::Inputs(inputs.iter().map(|o| (display_bytes(o.txid), o.vout)).collect()),
            fee: Amount::new(u128::from(fee.to_sat())),
        })
    }

    /// A replacement's rate: the quote's, and at least an eighth and 1 sat/vB above the
    /// previous version's, within the cap.
    fn replacement_rate(&self, previous: &SignedTx, quote: &FeeQuote) -> Result<u64, RailError> {
        let tx: Transaction = deserialize(&previous.raw)
            .map_err(|e| RailError::Rejected(format!("cannot decode the previous version: {e}")))?;
        let vsize = (tx.vsize() as u64).max(1);
        let old = u64::try_from(previous.fee.units()).unwrap_or(u64::MAX).saturating_mul(1_000) / vsize;
        let rate = rate_kvb(&quote.detail)?
            .max(old.saturating_mul(9).div_ceil(8))
            .max(old.saturating_add(INCREMENTAL_SAT_KVB));
        let cap = self.config.fee_rate_max_sat_vb.saturating_mul(1_000);
        if rate > cap {
            let fee = Amount::new(u128::from(rate) * u128::from(vsize) / 1_000);
            return Err(RailError::FeeAboveCap { fee, cap: Amount::new(u128::from(self.config.fee_cap_sats)) });
        }
        Ok(rate)
    }

    /// How many transactions in Core's mempool descend from `txid`, itself included (`None`:
    /// it is not in the mempool).
    async fn mempool_descendants(&self, txid: Txid) -> Result<Option<u64>, RailError> {
        match self.rpc.call_value("getmempoolentry", json!([txid.to_string()])).await {
            Ok(entry) => Ok(Some(entry["descendantcount"].as_u64().unwrap_or(1))),
            Err(RpcFailure::Error { code: rpc::INVALID_ADDRESS_OR_KEY, .. }) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }
}

#[async_trait]
impl Rail for BitcoinRail {
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError> {
        check_batch(&self.capabilities, batch)?;
        let recipients = self.recipients(batch)?;
        let rate = self.rate_for(batch).await?;
        self.sync().await?;
        let draft = Draft { recipients, must_spend: &[], sweep: false, fee: DraftFee::Rate(fee_rate(rate)) };
        let (_, fee) = self.wallet().create(&draft, true)?;
        let vbytes = fee.to_sat().saturating_mul(1_000).div_ceil(rate);
        // Headroom for one more input, should the coins change before the build.
        let fee_max = fee.to_sat().saturating_add(INPUT_VBYTES.saturating_mul(rate).div_ceil(1_000));
        self.check_fee(Sats::from_sat(fee_max), None)?;
        Ok(FeeQuote {
            fee_max: Amount::new(u128::from(fee_max)),
            detail: FeeDetail::Bitcoin { sat_per_kvb: rate, vbytes },
        })
    }

    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.capabilities, batch)?;
        let rate = rate_kvb(&fee.detail)?;
        let recipients = self.recipients(batch)?;
        self.sync().await?;
        let draft = Draft { recipients, must_spend: &[], sweep: false, fee: DraftFee::Rate(fee_rate(rate)) };
        self.sign(draft, None, Some(fee.fee_max))
    }

    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError> {
        match self.rpc.call::<String>("sendrawtransaction", json!([hex_of(&tx.raw)])).await {
            Ok(_) => Ok(()),
            Err(RpcFailure::Error { code, message }) => {
                let lower = message.to_lowercase();
                // The same bytes again, or bytes whose inputs are spent already (by this
                // version or another): harmless; the watcher tells which one, if any, is mined.
                if code == rpc::VERIFY_ALREADY_IN_CHAIN
                    || lower.contains("already in mempool")
                    || lower.contains("already known")
                    || lower.contains("missingorspent")
                    || lower.contains("missing-inputs")
                    || code == rpc::VERIFY_ERROR && lower.contains("missing")
                {
                    Ok(())
                } else {
                    Err(RailError::Rejected(format!("{message} (code {code})")))
                }
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError> {
        let tip = self.sync().await?;
        let depth = |block: BlockId| u64::from(tip.saturating_sub(block.height)) + 1;
        let mine: Vec<Txid> = watch.versions.iter().map(|v| txid_of(v.txid)).collect();
        {
            let wallet = self.wallet();
            for version in &watch.versions {
                if let Some(block) = wallet.confirmed(txid_of(version.txid)) {
                    // Its children that are mined paid for it too.
                    let children = watch.children.iter().filter(|child| {
                        child.spends_from(&version.txid) && wallet.confirmed(txid_of(child.txid)).is_some()
                    });
                    let fee_paid = children.fold(version.fee, |fee, child| fee.checked_add(child.fee).unwrap_or(fee));
                    return Ok(Observation::Confirmed {
                        txid: version.txid,
                        block: display_bytes(block.hash),
                        depth: depth(block),
                        fee_paid,
                    });
                }
            }
            if watch.seen_in_block.is_some() {
                return Ok(Observation::ReorgedOut);
            }
            for version in &watch.versions {
                for outpoint in outpoints(&version.spend)? {
                    let conflict =
                        wallet.confirmed_spenders(outpoint).into_iter().find(|(txid, _)| !mine.contains(txid));
                    if let Some((by, block)) = conflict {
                        return Ok(Observation::Replaced { by: display_bytes(by), depth: depth(block) });
                    }
                }
            }
        }
        for txid in &mine {
            match self.rpc.call_value("getmempoolentry", json!([txid.to_string()])).await {
                Ok(_) => return Ok(Observation::Pending),
                Err(RpcFailure::Error { code: rpc::INVALID_ADDRESS_OR_KEY, .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(Observation::Dropped)
    }

    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.capabilities, batch)?;
        let rate = self.replacement_rate(previous, fee)?;
        // Spent already (a payee spending its output, or our own child): a replacement would
        // evict those transactions and must pay their fees too (BIP 125 rule 3, the pinning
        // a payee can do). Pulled in by a child instead.
        if let Some(count @ 2..) = self.mempool_descendants(txid_of(previous.txid)).await? {
            return Err(RailError::NotReplaceable(format!(
                "{} transaction(s) in the mempool spend its outputs; a replacement would evict them and pay their fees",
                count - 1
            )));
        }
        let recipients = self.recipients(batch)?;
        let inputs = outpoints(&previous.spend)?;
        self.sync().await?;
        let draft = Draft { recipients, must_spend: &inputs, sweep: false, fee: DraftFee::Rate(fee_rate(rate)) };
        self.sign(draft, Some(previous), None)
    }

    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        let rate = self.replacement_rate(previous, fee)?;
        let inputs = outpoints(&previous.spend)?;
        self.sync().await?;
        let draft =
            Draft { recipients: Vec::new(), must_spend: &inputs, sweep: true, fee: DraftFee::Rate(fee_rate(rate)) };
        self.sign(draft, Some(previous), None)
    }

    /// Spends `parent`'s change back to the wallet so that the package pays the quote's rate,
    /// and at least an eighth and 1 sat/vB more than the parent alone; a second child
    /// replaces the first (it spends the same change), paying more than it did.
    async fn accelerate(
        &self,
        parent: &SignedTx,
        children: &[SignedTx],
        quote: &FeeQuote,
    ) -> Result<SignedTx, RailError> {
        let rate = self.replacement_rate(parent, quote)?;
        self.sync().await?;
        let parent_tx: Transaction =
            deserialize(&parent.raw).map_err(|e| RailError::Rejected(format!("cannot decode the parent: {e}")))?;
        let parent_txid = parent_tx.compute_txid();
        let mut wallet = self.wallet();
        let change = parent_tx
            .output
            .iter()
            .position(|output| wallet.wallet.is_mine(output.script_pubkey.clone()))
            .ok_or_else(|| RailError::NotReplaceable("it has no change output for a child to spend".into()))?;
        let change = OutPoint { txid: parent_txid, vout: u32::try_from(change).unwrap_or(u32::MAX) };
        // The wallet learns the unconfirmed parent so it can spend its change; nothing else
        // builds on it (only confirmed coins are selected).
        wallet.wallet.apply_unconfirmed_txs([(parent_tx.clone(), 0)]);
        drop(wallet);
        let must = [change];
        let draft = |fee| Draft { recipients: Vec::new(), must_spend: &must, sweep: true, fee };
        let probe = {
            let mut wallet = self.wallet();
            let (tx, _) = wallet.create(&draft(DraftFee::Rate(fee_rate(rate))), true)?;
            tx
        };
        // The child's own size once signed: its unsigned size plus a P2WPKH witness.
        let child_vsize = probe.vsize() as u64 + 27;
        let package = (parent_tx.vsize() as u64 + child_vsize).saturating_mul(rate).div_ceil(1_000);
        let parent_fee = u64::try_from(parent.fee.units()).unwrap_or(u64::MAX);
        let child_fee = package.saturating_sub(parent_fee).max(child_vsize.saturating_mul(MIN_RELAY_SAT_KVB) / 1_000);
        self.sign(draft(DraftFee::Absolute(Sats::from_sat(child_fee))), children.last(), None)
    }

    async fn health(&self) -> Health {
        match self.sync().await {
            Ok(head) => Health::Up { head: u64::from(head) },
            Err(_) => Health::Down,
        }
    }

    async fn balance_of(&self, _destination: &Address, _asset: Asset) -> Result<Amount, RailError> {
        // Core keeps no index of other people's addresses (scantxoutset scans the whole UTXO
        // set); reconciliation of destination balances is for EVM rails.
        Err(RailError::Unsupported { rail: self.config.rail, operation: "balance_of" })
    }

    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError> {
        let mut wallet = self.wallet();
        for spend in spends {
            if let Spend::Inputs(_) = spend {
                wallet.reserve(outpoints(spend)?);
            }
        }
        Ok(())
    }
}

/// The journaled bytes as hex, sent as they are (never decoded and encoded again).
fn hex_of(raw: &[u8]) -> String {
    raw.to_lower_hex_string()
}
