//! The hot wallet of a Bitcoin rail, on BDK: its descriptors (BIP 84, from one extended private
//! key), the coins it has on the best chain (fed block by block by the rail's sync), coin
//! selection, PSBT signing — and railyard's own rule on top: an outpoint any journaled
//! transaction spends is *reserved* and never selected again, whether or not that transaction
//! reached the chain, until its spend is buried. Only confirmed coins are selected, so no
//! settlement builds on another one that a replacement could still undo.

use std::collections::BTreeSet;

use bdk_wallet::bitcoin::{Amount as Sats, Block, FeeRate, OutPoint, ScriptBuf, Transaction};
use bdk_wallet::chain::{BlockId, ChainPosition};
use bdk_wallet::coin_selection::LargestFirstCoinSelection;
use bdk_wallet::error::CreateTxError;
use bdk_wallet::{KeychainKind, SignOptions, TxOrdering, Wallet};

use crate::RailError;

/// A spend stays reserved until it is this many blocks deep.
const RESERVED_UNTIL_DEPTH: u32 = 100;

pub(super) enum DraftFee {
    Rate(FeeRate),
    Absolute(Sats),
}

/// A transaction to build.
pub(super) struct Draft<'a> {
    pub recipients: Vec<(ScriptBuf, Sats)>,
    /// Outpoints it must spend (a replacement's: the previous version's inputs).
    pub must_spend: &'a [OutPoint],
    /// Spend `must_spend` only, and send what is left after the fee back to the wallet.
    pub sweep: bool,
    pub fee: DraftFee,
}

pub(super) struct HotWallet {
    pub(super) wallet: Wallet,
    reserved: BTreeSet<OutPoint>,
}

impl std::fmt::Debug for HotWallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotWallet").field("reserved", &self.reserved.len()).finish_non_exhaustive()
    }
}

fn create_error(error: CreateTxError) -> RailError {
    match error {
        CreateTxError::CoinSelection(short) => RailError::Rejected(format!(
            "the hot wallet's free confirmed coins cannot pay it: {short} (fund the wallet or wait for confirmations)"
        )),
        CreateTxError::OutputBelowDustLimit(i) => {
            RailError::InvalidBatch(format!("output {i} is below the dust limit of its script"))
        }
        other => RailError::Rejected(format!("the wallet cannot build it: {other}")),
    }
}

impl HotWallet {
    pub(super) fn new(wallet: Wallet) -> HotWallet {
        HotWallet { wallet, reserved: BTreeSet::new() }
    }

    pub(super) fn tip(&self) -> BlockId {
        self.wallet.latest_checkpoint().block_id()
    }

    /// The wallet's most recent `count` checkpoints, newest first, then genesis.
    pub(super) fn checkpoints(&self, count: usize) -> Vec<BlockId> {
        let mut ids: Vec<BlockId> = self.wallet.checkpoints().take(count).map(|cp| cp.block_id()).collect();
        if ids.last().is_some_and(|id| id.height != 0) {
            ids.extend(self.wallet.checkpoints().last().map(|cp| cp.block_id()));
        }
        ids
    }

    /// Connects `block` at `height` on top of `connected_to` (blocks above it leave the chain).
    pub(super) fn apply(&mut self, block: &Block, height: u32, connected_to: BlockId) -> Result<(), RailError> {
        self.wallet
            .apply_block_connected_to(block, height, connected_to)
            .map_err(|e| RailError::Unavailable(format!("the chain moved while the wallet synced: {e}")))
    }

    pub(super) fn reserve(&mut self, outpoints: impl IntoIterator<Item = OutPoint>) {
        self.reserved.extend(outpoints);
    }

    /// Forgets reservations whose spend is buried (or which the wallet never owned), so the
    /// set follows live work, not history.
    pub(super) fn prune(&mut self) {
        let tip = self.tip().height;
        let wallet = &self.wallet;
        self.reserved.retain(|outpoint| {
            if wallet.get_utxo(*outpoint).is_some() {
                return true;
            }
            if wallet.tx_graph().get_txout(*outpoint).is_none() {
                return false;
            }
            let buried = wallet.tx_graph().outspends(*outpoint).iter().any(|spender| {
                wallet.get_tx(*spender).is_some_and(|tx| match tx.chain_position {
                    ChainPosition::Confirmed { anchor, .. } => {
                        tip.saturating_sub(anchor.block_id.height) + 1 >= RESERVED_UNTIL_DEPTH
                    }
                    ChainPosition::Unconfirmed { .. } => false,
                })
            });
            !buried
        });
    }

    /// Where `txid` is confirmed on the best chain the wallet knows: (height, block).
    pub(super) fn confirmed(&self, txid: bdk_wallet::bitcoin::Txid) -> Option<BlockId> {
        match self.wallet.get_tx(txid)?.chain_position {
            ChainPosition::Confirmed { anchor, .. } => Some(anchor.block_id),
            ChainPosition::Unconfirmed { .. } => None,
        }
    }

    /// Transactions the wallet saw confirmed spending `outpoint`.
    pub(super) fn confirmed_spenders(&self, outpoint: OutPoint) -> Vec<(bdk_wallet::bitcoin::Txid, BlockId)> {
        let spenders = self.wallet.tx_graph().outspends(outpoint);
        spenders.iter().filter_map(|txid| self.confirmed(*txid).map(|block| (*txid, block))).collect()
    }

    /// Builds `draft` and, unless `dry_run`, signs it. Returns the transaction (unsigned for a
    /// dry run) and its fee. A dry run gives its change address back.
    pub(super) fn create(&mut self, draft: &Draft<'_>, dry_run: bool) -> Result<(Transaction, Sats), RailError> {
        let unspendable: Vec<OutPoint> =
            self.reserved.iter().filter(|o| !draft.must_spend.contains(o)).copied().collect();
        let sweep_to = draft.sweep.then(|| self.wallet.next_unused_address(KeychainKind::Internal).script_pubkey());
        let mut builder = self.wallet.build_tx().coin_selection(LargestFirstCoinSelection);
        builder.ordering(TxOrdering::Untouched).exclude_below_confirmations(1).unspendable(unspendable);
        if !draft.must_spend.is_empty() {
            builder.add_utxos(draft.must_spend).map_err(|e| {
                RailError::Rejected(format!("an input of the previous version is no longer the wallet's to spend: {e}"))
            })?;
        }
        if let Some(script) = sweep_to {
            builder.manually_selected_only().drain_to(script);
        }
        for (script, amount) in &draft.recipients {
            builder.add_recipient(script.clone(), *amount);
        }
        match draft.fee {
            DraftFee::Rate(rate) => builder.fee_rate(rate),
            DraftFee::Absolute(fee) => builder.fee_absolute(fee),
        };
        let mut psbt = builder.finish().map_err(create_error)?;
        let fee = psbt.fee().map_err(|e| RailError::Rejected(format!("the built transaction's fee: {e}")))?;
        if dry_run {
            self.wallet.cancel_tx(&psbt.unsigned_tx);
            return Ok((psbt.unsigned_tx, fee));
        }
        let signed = self.wallet.sign(&mut psbt, SignOptions::default());
        if !matches!(signed, Ok(true)) {
            self.wallet.cancel_tx(&psbt.unsigned_tx);
            return Err(RailError::Config(format!("the hot wallet could not sign every input: {signed:?}")));
        }
        let tx = psbt.extract_tx().map_err(|e| RailError::Rejected(format!("the signed transaction: {e}")))?;
        Ok((tx, fee))
    }

    /// Hands a change address back after a built transaction was not used.
    pub(super) fn forget(&mut self, tx: &Transaction) {
        self.wallet.cancel_tx(tx);
    }
}
