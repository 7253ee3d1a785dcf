//! The node's mempool: what `sendrawtransaction` accepts. Inputs must exist (in the chain or
//! the mempool) and be mature, scripts must pass Bitcoin Core's interpreter (libbitcoinkernel's
//! `verify`), outputs must not be dust, the fee must meet 1 sat/vB, and a transaction spending
//! what another mempool transaction spends is a replacement judged by BIP 125: the originals
//! signal replaceability, it adds no new unconfirmed inputs, pays a higher fee rate than each
//! original, at least their fees plus 1 sat/vB of its own size, and evicts at most 100.

use std::collections::{BTreeMap, HashMap, HashSet};

use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid};

use crate::NodeError;

/// Replacements evict at most this many transactions (BIP 125 rule 5).
const EVICTIONS_MAX: usize = 100;

#[derive(Clone, Debug)]
pub struct Entry {
    pub tx: Transaction,
    pub fee: Amount,
    pub vsize: u64,
    seq: u64,
}

#[derive(Debug, Default)]
pub struct Mempool {
    entries: HashMap<Txid, Entry>,
    /// Which mempool transaction spends each outpoint.
    spends: HashMap<OutPoint, Txid>,
    /// Acceptance order: a child is always accepted after its parents.
    order: BTreeMap<u64, Txid>,
    next: u64,
}

fn rejected(reason: impl Into<String>) -> NodeError {
    NodeError::Rejected(reason.into())
}

fn signals_rbf(tx: &Transaction) -> bool {
    tx.input.iter().any(|i| i.sequence.is_rbf())
}

impl Mempool {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, txid: &Txid) -> Option<&Entry> {
        self.entries.get(txid)
    }

    pub fn spender(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spends.get(outpoint).copied()
    }

    pub fn txids(&self) -> Vec<Txid> {
        self.order.values().copied().collect()
    }

    /// The transactions in acceptance order (parents before children).
    pub fn in_order(&self) -> Vec<Transaction> {
        self.order.values().map(|txid| self.entries[txid].tx.clone()).collect()
    }

    /// What a miner takes, as Bitcoin Core's block assembly does: packages (a transaction with
    /// its unconfirmed ancestors) whose fee rate, counting `deltas` (`prioritisetransaction`),
    /// is at least 1 sat/vB, parents before children. A parent below the rate is taken with a
    /// child that pays for both (CPFP).
    pub fn block_template(&self, deltas: &HashMap<Txid, i64>) -> Vec<Transaction> {
        let mut taken: HashSet<Txid> = HashSet::new();
        loop {
            let before = taken.len();
            for txid in self.order.values() {
                if taken.contains(txid) {
                    continue;
                }
                let mut package = HashSet::new();
                self.with_ancestors(*txid, &taken, &mut package);
                let (mut fee, mut vsize) = (0i64, 0i64);
                for member in &package {
                    let entry = &self.entries[member];
                    let own = i64::try_from(entry.fee.to_sat()).unwrap_or(i64::MAX);
                    fee = fee.saturating_add(own).saturating_add(deltas.get(member).copied().unwrap_or(0));
                    vsize = vsize.saturating_add(i64::try_from(entry.vsize).unwrap_or(i64::MAX));
                }
                if fee >= vsize {
                    taken.extend(package);
                }
            }
            if taken.len() == before {
                break;
            }
        }
        self.order.values().filter(|t| taken.contains(*t)).map(|t| self.entries[t].tx.clone()).collect()
    }

    /// `txid` and its mempool ancestors not in `taken`.
    fn with_ancestors(&self, txid: Txid, taken: &HashSet<Txid>, out: &mut HashSet<Txid>) {
        if taken.contains(&txid) || !out.insert(txid) {
            return;
        }
        for input in &self.entries[&txid].tx.input {
            if self.entries.contains_key(&input.previous_output.txid) {
                self.with_ancestors(input.previous_output.txid, taken, out);
            }
        }
    }

    /// Empties the mempool, returning its transactions in acceptance order.
    pub(crate) fn take_all(&mut self) -> Vec<Transaction> {
        let txs = self.in_order();
        *self = Mempool { next: self.next, ..Mempool::default() };
        txs
    }

    /// How many mempool transactions descend from `txid`, itself included (Core's
    /// `descendantcount`).
    pub fn descendant_count(&self, txid: Txid) -> usize {
        let mut out = HashSet::new();
        self.with_descendants(txid, &mut out);
        out.len()
    }

    /// `txid` and every mempool transaction that spends its outputs, transitively.
    fn with_descendants(&self, txid: Txid, out: &mut HashSet<Txid>) {
        if !out.insert(txid) {
            return;
        }
        let Some(entry) = self.entries.get(&txid) else { return };
        for vout in 0..entry.tx.output.len() {
            let outpoint = OutPoint { txid, vout: u32::try_from(vout).expect("outputs fit u32") };
            if let Some(child) = self.spends.get(&outpoint) {
                self.with_descendants(*child, out);
            }
        }
    }

    fn remove(&mut self, txid: &Txid) {
        if let Some(entry) = self.entries.remove(txid) {
            for input in &entry.tx.input {
                self.spends.remove(&input.previous_output);
            }
            self.order.remove(&entry.seq);
        }
    }

    /// Accepts `tx` or says why not. `coin` finds a confirmed output and whether it is mature.
    pub(crate) fn accept(
        &mut self,
        tx: Transaction,
        coin: &dyn Fn(&OutPoint) -> Option<(TxOut, bool)>,
    ) -> Result<Txid, NodeError> {
        let txid = tx.compute_txid();
        if self.entries.contains_key(&txid) {
            return Err(rejected("txn-already-in-mempool"));
        }
        if tx.is_coinbase() {
            return Err(rejected("coinbase"));
        }
        if tx.input.is_empty() {
            return Err(rejected("bad-txns-vin-empty"));
        }
        if tx.output.is_empty() {
            return Err(rejected("bad-txns-vout-empty"));
        }
        let mut seen = HashSet::new();
        let mut spent = Vec::with_capacity(tx.input.len());
        let mut parents = HashSet::new();
        for input in &tx.input {
            if !seen.insert(input.previous_output) {
                return Err(rejected("bad-txns-inputs-duplicate"));
            }
            let outpoint = &input.previous_output;
            let output = match coin(outpoint) {
                Some((_, false)) => return Err(rejected("bad-txns-premature-spend-of-coinbase")),
                Some((output, true)) => output,
                None => {
                    let parent = self.entries.get(&outpoint.txid);
                    let output = parent.and_then(|p| p.tx.output.get(outpoint.vout as usize));
                    parents.insert(outpoint.txid);
                    output.cloned().ok_or_else(|| rejected("bad-txns-inputs-missingorspent"))?
                }
            };
            spent.push(output);
        }
        let value_in: Amount = spent.iter().map(|o| o.value).sum();
        let value_out: Amount = tx.output.iter().map(|o| o.value).sum();
        let fee = value_in.checked_sub(value_out).ok_or_else(|| rejected("bad-txns-in-belowout"))?;
        let vsize = u64::try_from(tx.vsize()).expect("sizes fit u64");
        for output in &tx.output {
            if !output.script_pubkey.is_op_return() && output.value < output.script_pubkey.minimal_non_dust() {
                return Err(rejected("dust"));
            }
        }
        if fee.to_sat() < vsize {
            return Err(rejected(format!("min relay fee not met, {} < {vsize}", fee.to_sat())));
        }
        verify_scripts(&tx, &spent)?;

        // Replacement (BIP 125).
        let direct: HashSet<Txid> =
            tx.input.iter().filter_map(|i| self.spends.get(&i.previous_output).copied()).collect();
        let mut evicted = HashSet::new();
        if !direct.is_empty() {
            for original in &direct {
                let entry = &self.entries[original];
                if !signals_rbf(&entry.tx) {
                    return Err(rejected(format!(
                        "txn-mempool-conflict (spends what {original} spends, which does not signal replacement)"
                    )));
                }
                // Rule 6: a higher fee rate than each transaction it replaces directly.
                if u128::from(fee.to_sat()) * u128::from(entry.vsize)
                    <= u128::from(entry.fee.to_sat()) * u128::from(vsize)
                {
                    return Err(rejected(format!(
                        "insufficient fee, rejecting replacement {txid}; new feerate not above {original}'s"
                    )));
                }
            }
            for original in &direct {
                self.with_descendants(*original, &mut evicted);
            }
            if evicted.len() > EVICTIONS_MAX {
                return Err(rejected(format!(
                    "too many potential replacements, rejecting replacement {txid}; {} > {EVICTIONS_MAX}",
                    evicted.len()
                )));
            }
            if parents.iter().any(|p| evicted.contains(p)) {
                return Err(rejected("bad-txns-spends-conflicting-tx"));
            }
            // Rule 2: no new unconfirmed inputs.
            let original_parents: HashSet<Txid> = direct
                .iter()
                .flat_map(|o| self.entries[o].tx.input.iter().map(|i| i.previous_output.txid))
                .filter(|p| self.entries.contains_key(p))
                .collect();
            if parents.iter().any(|p| !original_parents.contains(p)) {
                return Err(rejected(format!("replacement-adds-unconfirmed, rejecting replacement {txid}")));
            }
            // Rules 3 and 4: at least the fees it evicts, plus 1 sat/vB of its own size.
            let evicted_fees: Amount = evicted.iter().map(|t| self.entries[t].fee).sum();
            if fee < evicted_fees || fee.to_sat() - evicted_fees.to_sat() < vsize {
                return Err(rejected(format!(
                    "insufficient fee, rejecting replacement {txid}, not enough additional fees to relay; {} < {}",
                    fee.to_sat().saturating_sub(evicted_fees.to_sat()),
                    vsize
                )));
            }
        }
        for gone in &evicted {
            self.remove(gone);
        }
        for input in &tx.input {
            self.spends.insert(input.previous_output, txid);
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, txid);
        self.entries.insert(txid, Entry { tx, fee, vsize, seq });
        Ok(txid)
    }
}

/// Runs every input's script through Bitcoin Core's interpreter.
fn verify_scripts(tx: &Transaction, spent: &[TxOut]) -> Result<(), NodeError> {
    let kernel_error = |e: bitcoinkernel::KernelError| rejected(format!("mandatory-script-verify-flag-failed ({e})"));
    let ktx = bitcoinkernel::Transaction::new(&serialize(tx)).map_err(kernel_error)?;
    let outputs: Vec<bitcoinkernel::TxOut> = spent
        .iter()
        .map(|o| {
            let script = bitcoinkernel::ScriptPubkey::new(o.script_pubkey.as_bytes())?;
            Ok(bitcoinkernel::TxOut::new(&script, i64::try_from(o.value.to_sat()).expect("amounts fit i64")))
        })
        .collect::<Result<_, bitcoinkernel::KernelError>>()
        .map_err(kernel_error)?;
    let data = bitcoinkernel::PrecomputedTransactionData::new(&ktx, &outputs).map_err(kernel_error)?;
    for (i, output) in spent.iter().enumerate() {
        let script = bitcoinkernel::ScriptPubkey::new(output.script_pubkey.as_bytes()).map_err(kernel_error)?;
        let amount = i64::try_from(output.value.to_sat()).expect("amounts fit i64");
        bitcoinkernel::verify(&script, Some(amount), &ktx, i, Some(bitcoinkernel::VERIFY_ALL), &data)
            .map_err(kernel_error)?;
    }
    Ok(())
}
