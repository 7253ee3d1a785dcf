//! The sandbox rail: an in-process chain with block times, confirmations and injectable
//! faults. It is the embedded default (so railyard runs with no node) and the simulator's rail,
//! so it is deterministic: the same seed, the same calls and the same times give the same
//! transaction ids, blocks and outcomes. Time moves only when [`SandboxRail::advance_to`] is
//! called.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use model::{Amount, Asset, SignedTx, Spend, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Batch, Capabilities, FeeDetail, FeeQuote, Health, Observation, Rail, RailError, Watch, check_batch};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxConfig {
    pub capabilities: Capabilities,
    pub seed: u64,
    pub block_time_ms: u64,
    /// The fee a settlement pays while there is no fee spike: `fee`, plus `fee_per_payout`
    /// for each payout it carries (as gas grows with a batch on an EVM chain).
    pub fee: Amount,
    pub fee_per_payout: Amount,
    /// The most a settlement may cost; a quote above it is `FeeAboveCap`.
    pub fee_cap: Amount,
}

/// Faults to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The node is unreachable: every call fails until `Restore`.
    Outage,
    /// Blocks keep coming but include nothing until `Restore`.
    Stuck,
    /// The next transaction broadcast vanishes from the mempool.
    DropNext,
    /// The next transaction included in a block reverts (its nonce is still spent).
    RevertNext,
    /// The last `depth` blocks are replaced; their transactions return to the mempool.
    Reorg { depth: usize },
    /// The minimum fee for inclusion becomes `multiplier` times the normal fee.
    FeeSpike { multiplier: u64 },
    /// The node refuses every broadcast (the hot wallet cannot pay for gas) until `Restore`.
    RefuseBroadcasts,
    /// The next block includes a transaction railyard did not sign (someone else used the hot
    /// wallet's key): it spends the account's next nonce and pays nobody.
    ForeignSpend,
    /// Clears every fault still in force or pending: outage, stuck, refused broadcasts, fee
    /// spike, and a drop or revert not yet used.
    Restore,
}

/// The transaction format of the sandbox chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SandboxTx {
    seed: u64,
    nonce: u64,
    fee: Amount,
    asset: Asset,
    /// (destination, amount); empty for a cancel.
    payouts: Vec<(model::Address, Amount)>,
}

/// Where a transaction was mined, whether it reverted, and the fee the block charged it.
#[derive(Clone, Copy, Debug)]
struct Inclusion {
    index: usize,
    reverted: bool,
    fee_paid: Amount,
}

#[derive(Debug)]
struct Block {
    hash: [u8; 32],
    txs: Vec<[u8; 32]>,
}

#[derive(Debug)]
struct Chain {
    now_ms: u64,
    next_block_ms: u64,
    blocks: Vec<Block>,
    mempool: BTreeMap<[u8; 32], SandboxTx>,
    known: BTreeMap<[u8; 32], SandboxTx>,
    /// txid → where and how it was mined
    included: BTreeMap<[u8; 32], Inclusion>,
    /// nonce → txid that spent it
    spent: BTreeMap<u64, [u8; 32]>,
    next_nonce: u64,
    balances: BTreeMap<(String, Asset), Amount>,
    outage: bool,
    stuck: bool,
    drop_next: bool,
    revert_next: bool,
    refuse_broadcasts: bool,
    fee_multiplier: u64,
    hash_counter: u64,
    /// Pruned mode: transaction bodies older than this many blocks are forgotten and balances
    /// are not kept (see `SandboxRail::prune`).
    keep_blocks: Option<usize>,
    foreign_next: bool,
    /// Transactions railyard did not sign: the chain charges them, but not to railyard.
    foreign: BTreeSet<[u8; 32]>,
    /// A node without historical state: who spent a nonce can be told only for spends in the
    /// last this many blocks (see `SandboxRail::keep_state`).
    state_blocks: Option<usize>,
}

#[derive(Debug)]
pub struct SandboxRail {
    config: SandboxConfig,
    chain: Mutex<Chain>,
}

impl SandboxRail {
    pub fn new(config: SandboxConfig, now: Timestamp) -> SandboxRail {
        let chain = Chain {
            now_ms: now.0,
            next_block_ms: now.0 + config.block_time_ms,
            blocks: Vec::new(),
            mempool: BTreeMap::new(),
            known: BTreeMap::new(),
            included: BTreeMap::new(),
            spent: BTreeMap::new(),
            next_nonce: 0,
            balances: BTreeMap::new(),
            outage: false,
            stuck: false,
            drop_next: false,
            revert_next: false,
            refuse_broadcasts: false,
            fee_multiplier: 1,
            hash_counter: 0,
            keep_blocks: None,
            foreign_next: false,
            foreign: BTreeSet::new(),
            state_blocks: None,
        };
        SandboxRail { config, chain: Mutex::new(chain) }
    }

    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().expect("sandbox chain lock")
    }

    /// Moves time forward, producing every block due by `now`.
    pub fn advance_to(&self, now: Timestamp) {
        let mut chain = self.chain();
        while chain.next_block_ms <= now.0 {
            let at = chain.next_block_ms;
            self.produce_block(&mut chain);
            chain.next_block_ms = at + self.config.block_time_ms;
        }
        chain.now_ms = chain.now_ms.max(now.0);
    }

    /// Turns the chain into a pruned node, as long runs need: transaction bodies older than
    /// `keep_blocks` blocks are forgotten (inclusions, spent nonces and block hashes stay, so
    /// observing and replacing work as before) and no balances are kept (`balance_of` is then
    /// unsupported). Memory stays flat however many payouts the chain carries.
    pub fn prune(&self, keep_blocks: usize) {
        let mut chain = self.chain();
        chain.keep_blocks = Some(keep_blocks.max(1));
        chain.balances.clear();
    }

    /// Makes the node one without historical state, as ordinary nodes are: it can name the
    /// transaction that spent a nonce only if that happened in the last `blocks` blocks.
    pub fn keep_state(&self, blocks: usize) {
        self.chain().state_blocks = Some(blocks);
    }

    pub fn inject(&self, fault: Fault) {
        let mut chain = self.chain();
        match fault {
            Fault::Outage => chain.outage = true,
            Fault::Stuck => chain.stuck = true,
            Fault::DropNext => chain.drop_next = true,
            Fault::RevertNext => chain.revert_next = true,
            Fault::FeeSpike { multiplier } => chain.fee_multiplier = multiplier.max(1),
            Fault::RefuseBroadcasts => chain.refuse_broadcasts = true,
            Fault::ForeignSpend => chain.foreign_next = true,
            Fault::Restore => {
                chain.outage = false;
                chain.stuck = false;
                chain.refuse_broadcasts = false;
                chain.fee_multiplier = 1;
                chain.drop_next = false;
                chain.revert_next = false;
                chain.foreign_next = false;
            }
            Fault::Reorg { depth } => {
                let keep = chain.blocks.len().saturating_sub(depth);
                let removed: Vec<Block> = chain.blocks.drain(keep..).collect();
                for txid in removed.iter().flat_map(|b| &b.txs) {
                    // A pruned body cannot go back to the mempool: the transaction is dropped,
                    // its nonce free again (its sender still has the bytes).
                    let Some(tx) = chain.known.get(txid).cloned() else {
                        chain.included.remove(txid);
                        chain.spent.retain(|_, spender| spender != txid);
                        continue;
                    };
                    let reverted = chain.included.remove(txid).is_some_and(|i| i.reverted);
                    if !reverted && chain.keep_blocks.is_none() {
                        for (destination, amount) in &tx.payouts {
                            let balance =
                                chain.balances.get_mut(&(destination.to_string(), tx.asset)).expect("paid before");
                            *balance =
                                balance.checked_sub(*amount).expect("a reorg takes back only what the block paid");
                        }
                    }
                    chain.spent.remove(&tx.nonce);
                    chain.mempool.insert(*txid, tx);
                }
                // Replacement blocks at the same heights, with different hashes, empty: the
                // returned transactions wait for the next block.
                for _ in 0..removed.len() {
                    let hash = self.next_hash(&mut chain);
                    chain.blocks.push(Block { hash, txs: Vec::new() });
                }
            }
        }
    }

    /// What `destination` has received in `asset` on this chain (counting only blocks that
    /// are still on it).
    pub fn balance_of(&self, destination: &str, asset: Asset) -> Amount {
        self.chain().balances.get(&(destination.to_owned(), asset)).copied().unwrap_or(Amount::ZERO)
    }

    /// The fees the chain's blocks charged (reverted transactions pay too): what the sender's
    /// ledger must have booked. As on an EIP-1559 chain, a transaction offers a fee and is
    /// charged the block's price, which may be less (a bump made during a fee spike that has
    /// passed by the time it is mined is charged the lower price).
    pub fn fees_paid(&self) -> Amount {
        let chain = self.chain();
        let fees = chain.included.values().map(|i| i.fee_paid);
        Amount::try_sum(fees).expect("sandbox fees stay far below u128")
    }

    /// Transaction bodies the chain holds (bounded in pruned mode).
    pub fn bodies_kept(&self) -> usize {
        self.chain().known.len()
    }

    /// The account's nonces as the chain sees them, for a person reading a failure: the
    /// first unspent one and those waiting in the mempool.
    pub fn nonces(&self) -> String {
        let chain = self.chain();
        let waiting: BTreeSet<u64> = chain.mempool.values().map(|t| t.nonce).collect();
        format!("first unspent nonce {}, mempool nonces {waiting:?}", first_unspent(&chain.spent))
    }

    pub fn head(&self) -> u64 {
        self.chain().blocks.len() as u64
    }

    fn next_hash(&self, chain: &mut Chain) -> [u8; 32] {
        chain.hash_counter += 1;
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"railyard-sandbox-block");
        hasher.update(&self.config.seed.to_le_bytes());
        hasher.update(&chain.hash_counter.to_le_bytes());
        *hasher.finalize().as_bytes()
    }

    /// The block's price for a transaction of `payouts` payouts.
    fn min_fee(&self, chain: &Chain, payouts: usize) -> Option<Amount> {
        let per_payout = self.config.fee_per_payout.checked_mul(payouts as u128)?;
        self.config.fee.checked_add(per_payout)?.checked_mul(u128::from(chain.fee_multiplier))
    }

    fn produce_block(&self, chain: &mut Chain) {
        let hash = self.next_hash(chain);
        let index = chain.blocks.len();
        let mut txs = Vec::new();
        if !chain.stuck {
            // Versions whose nonce is spent can never be mined.
            let spent: Vec<[u8; 32]> =
                chain.mempool.iter().filter(|(_, tx)| chain.spent.contains_key(&tx.nonce)).map(|(id, _)| *id).collect();
            for txid in spent {
                chain.mempool.remove(&txid);
            }
            // EVM nonce order: only the account's next nonce can be mined, so a transaction
            // that is missing or cannot pay blocks every later one.
            let mut ready = Vec::new();
            let mut next = first_unspent(&chain.spent);
            if std::mem::take(&mut chain.foreign_next) {
                // Someone else's transfer from the same account, paying nobody railyard
                // knows: like any transaction, a reorg puts it back in the mempool.
                let txid = self.next_hash(chain);
                // It outbids any version of railyard's at that nonce: this block takes it.
                let fee = Amount::MAX;
                let tx = SandboxTx { seed: self.config.seed, nonce: next, fee, asset: Asset::ETH, payouts: Vec::new() };
                chain.foreign.insert(txid);
                chain.known.insert(txid, tx.clone());
                chain.mempool.insert(txid, tx);
            }
            loop {
                let best = chain
                    .mempool
                    .iter()
                    .filter(|(_, tx)| {
                        tx.nonce == next && tx.fee >= self.min_fee(chain, tx.payouts.len()).unwrap_or(Amount::MAX)
                    })
                    .max_by_key(|(_, tx)| tx.fee)
                    .map(|(id, tx)| (*id, tx.clone()));
                let Some(found) = best else { break };
                ready.push(found);
                next += 1;
            }
            for (txid, tx) in ready {
                chain.mempool.remove(&txid);
                let reverted = std::mem::take(&mut chain.revert_next);
                chain.spent.insert(tx.nonce, txid);
                // The block's price, never more than the transaction offered.
                let fee_paid = if chain.foreign.contains(&txid) {
                    Amount::ZERO // charged, but not to railyard
                } else {
                    self.min_fee(chain, tx.payouts.len()).unwrap_or(Amount::MAX).min(tx.fee)
                };
                chain.included.insert(txid, Inclusion { index, reverted, fee_paid });
                if !reverted && chain.keep_blocks.is_none() {
                    for (destination, amount) in &tx.payouts {
                        let balance = chain.balances.entry((destination.to_string(), tx.asset)).or_default();
                        *balance = balance.checked_add(*amount).expect("sandbox balances stay far below u128");
                    }
                }
                txs.push(txid);
            }
        }
        chain.blocks.push(Block { hash, txs });
        if let Some(keep) = chain.keep_blocks
            && let Some(old) = chain.blocks.len().checked_sub(keep + 1)
        {
            // The bodies go; the block keeps its txids (as `included` does), so a reorg
            // deeper than that still undoes what the block held.
            let forgotten = chain.blocks[old].txs.clone();
            for txid in forgotten {
                chain.known.remove(&txid);
            }
        }
    }

    fn sign(&self, tx: &SandboxTx) -> SignedTx {
        let raw = postcard::to_stdvec(tx).expect("sandbox transactions serialize");
        let txid = *blake3::hash(&raw).as_bytes();
        SignedTx { txid, raw, spend: Spend::Nonce { sender: [0x5a; 20], nonce: tx.nonce }, fee: tx.fee }
    }

    fn decode(&self, tx: &SignedTx) -> Result<SandboxTx, RailError> {
        let decoded: SandboxTx = postcard::from_bytes(&tx.raw)
            .map_err(|e| RailError::Rejected(format!("not a sandbox transaction: {e}")))?;
        if decoded.seed != self.config.seed || *blake3::hash(&tx.raw).as_bytes() != tx.txid {
            return Err(RailError::Rejected("transaction is not for this sandbox chain".into()));
        }
        Ok(decoded)
    }

    fn fee_of(quote: &FeeQuote) -> Result<Amount, RailError> {
        match quote.detail {
            FeeDetail::Sandbox { fee } => Ok(fee),
            FeeDetail::Evm { .. } | FeeDetail::Bitcoin { .. } => {
                Err(RailError::InvalidBatch("a fee quote of another rail was given to the sandbox".into()))
            }
        }
    }

    fn replacement(
        &self,
        previous: &SignedTx,
        fee: Amount,
        payouts: Vec<(model::Address, Amount)>,
    ) -> Result<SignedTx, RailError> {
        let old = self.decode(previous)?;
        // As an EVM node requires (and the EVM adapter does): a replacement pays at least an
        // eighth more than the version it replaces, within the cap.
        let floor = old.fee.units().saturating_mul(9).div_ceil(8);
        let fee = fee.max(Amount::new(floor));
        if fee > self.config.fee_cap {
            return Err(RailError::FeeAboveCap { fee, cap: self.config.fee_cap });
        }
        Ok(self.sign(&SandboxTx { fee, payouts, ..old }))
    }
}

/// The lowest nonce no mined transaction has spent.
fn first_unspent(spent: &BTreeMap<u64, [u8; 32]>) -> u64 {
    let mut next = 0;
    for nonce in spent.keys() {
        if *nonce != next {
            break;
        }
        next += 1;
    }
    next
}

/// The account's pending nonce: past every nonce spent or waiting in the mempool.
fn pending_nonce(chain: &Chain) -> u64 {
    chain.spent.keys().chain(chain.mempool.values().map(|t| &t.nonce)).max().map_or(0, |n| n + 1)
}

fn available(chain: &Chain) -> Result<(), RailError> {
    if chain.outage { Err(RailError::Unavailable("sandbox outage".into())) } else { Ok(()) }
}

fn payouts_of(batch: &Batch) -> Vec<(model::Address, Amount)> {
    batch.payouts.iter().map(|p| (p.destination.clone(), p.amount)).collect()
}

#[async_trait]
impl Rail for SandboxRail {
    fn capabilities(&self) -> &Capabilities {
        &self.config.capabilities
    }

    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError> {
        check_batch(&self.config.capabilities, batch)?;
        let chain = self.chain();
        available(&chain)?;
        let fee = self
            .min_fee(&chain, batch.payouts.len())
            .ok_or(RailError::FeeAboveCap { fee: Amount::MAX, cap: self.config.fee_cap })?;
        if fee > self.config.fee_cap {
            return Err(RailError::FeeAboveCap { fee, cap: self.config.fee_cap });
        }
        Ok(FeeQuote { fee_max: fee, detail: FeeDetail::Sandbox { fee } })
    }

    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.config.capabilities, batch)?;
        let fee = Self::fee_of(fee)?;
        let mut chain = self.chain();
        // Never below the account's pending nonce (as the EVM adapter does): a foreign spend
        // moves it past railyard's own count.
        let nonce = chain.next_nonce.max(pending_nonce(&chain));
        chain.next_nonce = nonce + 1;
        Ok(self.sign(&SandboxTx { seed: self.config.seed, nonce, fee, asset: batch.asset, payouts: payouts_of(batch) }))
    }

    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError> {
        let decoded = self.decode(tx)?;
        let mut chain = self.chain();
        available(&chain)?;
        if chain.refuse_broadcasts {
            return Err(RailError::Rejected("insufficient funds for gas * price + value".into()));
        }
        chain.known.insert(tx.txid, decoded.clone());
        if chain.included.contains_key(&tx.txid) || chain.spent.contains_key(&decoded.nonce) {
            return Ok(()); // already mined (or its nonce is spent): harmless
        }
        if std::mem::take(&mut chain.drop_next) {
            return Ok(()); // accepted, then lost
        }
        // Replace-by-fee: a version with the same nonce stays only if it pays at least as much.
        let competitor = chain
            .mempool
            .iter()
            .find(|(id, t)| t.nonce == decoded.nonce && **id != tx.txid)
            .map(|(id, t)| (*id, t.fee));
        if let Some((id, fee)) = competitor {
            if fee >= decoded.fee {
                return Err(RailError::Rejected("replacement transaction underpriced".into()));
            }
            chain.mempool.remove(&id);
        }
        chain.mempool.insert(tx.txid, decoded);
        Ok(())
    }

    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError> {
        let chain = self.chain();
        available(&chain)?;
        let head = chain.blocks.len();
        for version in &watch.versions {
            if let Some(&Inclusion { index, reverted, fee_paid }) = chain.included.get(&version.txid) {
                let block = chain.blocks[index].hash;
                let depth = (head - index) as u64;
                let txid = version.txid;
                return Ok(if reverted {
                    Observation::Reverted { txid, block, depth, fee_paid }
                } else {
                    Observation::Confirmed { txid, block, depth, fee_paid }
                });
            }
        }
        if watch.seen_in_block.is_some() {
            return Ok(Observation::ReorgedOut);
        }
        let nonces: BTreeSet<u64> =
            watch.versions.iter().filter_map(|v| self.decode(v).ok()).map(|t| t.nonce).collect();
        for nonce in &nonces {
            if let Some(txid) = chain.spent.get(nonce) {
                let index = chain.included[txid].index;
                if let Some(kept) = chain.state_blocks
                    && head - index > kept
                {
                    let reason =
                        format!("nonce {nonce} was spent more than {kept} blocks ago; this node keeps no older state");
                    return Ok(Observation::SpenderUnknown { reason });
                }
                return Ok(Observation::Replaced { by: *txid, depth: (head - index) as u64 });
            }
        }
        if watch.versions.iter().any(|v| chain.mempool.contains_key(&v.txid)) {
            return Ok(Observation::Pending);
        }
        Ok(Observation::Dropped)
    }

    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        check_batch(&self.config.capabilities, batch)?;
        self.replacement(previous, Self::fee_of(fee)?, payouts_of(batch))
    }

    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.replacement(previous, Self::fee_of(fee)?, Vec::new())
    }

    async fn balance_of(&self, destination: &model::Address, asset: Asset) -> Result<Amount, RailError> {
        let chain = self.chain();
        available(&chain)?;
        if chain.keep_blocks.is_some() {
            return Err(RailError::Unsupported {
                rail: self.config.capabilities.rail,
                operation: "balance_of on a pruned sandbox",
            });
        }
        drop(chain);
        Ok(SandboxRail::balance_of(self, &destination.to_string(), asset))
    }

    /// After a restart the signer knows only what the node and the journal know, as an EVM
    /// signer does: the next nonce is past every nonce spent or pending on the chain and every
    /// nonce the journal signed. A nonce built but never journaled nor broadcast (the process
    /// died in between) is used again, so it leaves no gap that would block every later one.
    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError> {
        let mut chain = self.chain();
        let on_chain = pending_nonce(&chain);
        let journaled = spends
            .iter()
            .filter_map(|s| match s {
                Spend::Nonce { nonce, .. } => Some(nonce + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        chain.next_nonce = on_chain.max(journaled);
        Ok(())
    }

    async fn health(&self) -> Health {
        let chain = self.chain();
        if chain.outage { Health::Down } else { Health::Up { head: chain.blocks.len() as u64 } }
    }
}
