//! The history store: finished payments, settlements and batches leave memory and are kept in
//! the journal's history table, written in the same commit as the events that finished them.
//! Keys are a one-byte kind and big-endian ids, so scans run in id order:
//!
//! - `p` the upper 96 bits of a payment id, the group's first and last row → the records of up
//!   to 64 payments of one batch that one commit finished (postcard, in id order). The payments
//!   of a batch share those upper bits (an id is the batch's first record, then its row), so a
//!   payment is found among its batch's groups whose rows span it (at most one per commit), and
//!   a commit writes one entry per 64 payments instead of one per payment (a B-tree insert each
//!   was a quarter of the engine's wall time). Each payment finishes once: first rows never
//!   collide.
//! - `s` settlement id → the settlement's last record
//! - `b` batch id → the batch (merchant, count, payment ids)
//! - `r` merchant, reference length, reference, payment id → nothing (lookup by reference;
//!   written when the payment is accepted, so it covers open payments too)
//! - `d` rail, asset, destination → total settled to it (a counter, for reconciliation; only
//!   with `EngineConfig::reconcile_balances`)

use journal::HistoryOp;
use model::*;
use serde::{Serialize, de::DeserializeOwned};

use crate::{Engine, EngineError};

pub(crate) const PAYMENTS: u8 = b'p';
pub(crate) const SETTLEMENT: u8 = b's';
pub(crate) const BATCH: u8 = b'b';
pub(crate) const REFERENCE: u8 = b'r';
pub(crate) const DESTINATION: u8 = b'd';

pub(crate) fn key(kind: u8, id: u128) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(kind);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// Most payments in one group: a lookup by id decodes at most one group per commit that
/// finished payments of its batch, and a group of 64 keeps that small while a commit still
/// writes one entry for dozens of payments.
const GROUP_PAYMENTS_MAX: usize = 64;

/// The prefix of the groups of `id`'s batch: kind, then the id's upper 96 bits.
fn group_prefix(id: PaymentId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(PAYMENTS);
    key.extend_from_slice(&id.0.to_be_bytes()[..12]);
    key
}

/// A payment's row in its batch: the low 32 bits of its id.
fn row(id: PaymentId) -> [u8; 4] {
    id.0.to_be_bytes()[12..].try_into().expect("four bytes")
}

fn reference_prefix(merchant: MerchantId, reference: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + 2 + reference.len() + 16);
    key.push(REFERENCE);
    key.extend_from_slice(&merchant.0.to_be_bytes());
    key.extend_from_slice(&u16::try_from(reference.len()).unwrap_or(u16::MAX).to_be_bytes());
    key.extend_from_slice(reference.as_bytes());
    key
}

pub(crate) fn destination_key(rail: RailId, asset: Asset, destination: &Address) -> Vec<u8> {
    let mut key = vec![DESTINATION];
    for part in [rail.as_str(), asset.symbol()] {
        key.push(u8::try_from(part.len()).unwrap_or(u8::MAX));
        key.extend_from_slice(part.as_bytes());
    }
    // The address's own encoding (its bytes, not its checksummed text: no hashing per leg).
    postcard::to_extend(destination, key).expect("addresses serialize")
}

fn put(key: Vec<u8>, value: &impl Serialize) -> HistoryOp {
    // Sized first: a record grown by doubling costs several allocations and copies, and every
    // finished payment writes one.
    let size = postcard::experimental::serialized_size(value).expect("records serialize");
    HistoryOp::Put { key, value: postcard::to_extend(value, Vec::with_capacity(size)).expect("records serialize") }
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, EngineError> {
    postcard::from_bytes(bytes)
        .map_err(|e| EngineError::Config(format!("history store: a record does not decode: {e}")))
}

/// The history writes of the payments a commit finished: one group per batch.
pub(crate) fn payment_groups(finished: &[Box<PaymentRecord>]) -> Vec<HistoryOp> {
    // Sorted by reference: a record is a few hundred bytes to move.
    let mut sorted: Vec<&PaymentRecord> = finished.iter().map(|record| &**record).collect();
    sorted.sort_unstable_by_key(|record| record.payment.id);
    sorted
        .chunk_by(|a, b| a.payment.id.0 >> 32 == b.payment.id.0 >> 32)
        .flat_map(|batch| batch.chunks(GROUP_PAYMENTS_MAX))
        .map(|group| {
            let (first, last) = (group[0].payment.id, group[group.len() - 1].payment.id);
            let mut key = group_prefix(first);
            key.extend_from_slice(&row(first));
            key.extend_from_slice(&row(last));
            // One pass: a finished payment's record is a few hundred bytes, and a group grown
            // past this guess doubles once or twice (sizing it first was a second full pass).
            let value = postcard::to_extend(&group, Vec::with_capacity(group.len() * 384)).expect("records serialize");
            HistoryOp::Put { key, value }
        })
        .collect()
}

/// The history writes for the settlements and batches that left the book, and (when
/// `destination_totals`) per destination the amount a final settlement paid it. Finished
/// payments are written per commit (`payment_groups`).
pub(crate) fn ops(retired: &Retired, destination_totals: bool) -> Vec<HistoryOp> {
    let mut ops = Vec::new();
    for record in &retired.settlements {
        ops.push(put(key(SETTLEMENT, record.settlement.id.0), record));
        if destination_totals && record.state == SettlementState::Final {
            let s = &record.settlement;
            for leg in &s.legs {
                let key = destination_key(s.rail, s.asset, &leg.destination);
                ops.push(HistoryOp::Add { key, amount: leg.amount.units() });
            }
        }
    }
    for (id, record) in &retired.batches {
        ops.push(put(key(BATCH, id.0), record));
    }
    ops
}

/// The reference index entries of newly accepted payments, written with the batch (so a
/// reference is found taken whether its payment is open or finished).
pub(crate) fn reference_ops(payments: &[Payment]) -> Vec<HistoryOp> {
    payments
        .iter()
        .map(|payment| {
            let mut reference = reference_prefix(payment.merchant, &payment.reference);
            reference.extend_from_slice(&payment.id.0.to_be_bytes());
            HistoryOp::Put { key: reference, value: Vec::new() }
        })
        .collect()
}

impl Engine {
    /// For each reference, whether the merchant used it before (in any accepted batch, one
    /// still in flight to the journal included): one read of the history store for the whole
    /// batch.
    pub(crate) fn references_taken(&self, merchant: MerchantId, references: &[&str]) -> Result<Vec<bool>, EngineError> {
        let prefixes: Vec<Vec<u8>> = references.iter().map(|r| reference_prefix(merchant, r)).collect();
        let stored = self.journal.history_prefixes_used(&prefixes)?;
        Ok(stored.into_iter().zip(&prefixes).map(|(used, prefix)| used || self.reference_in_flight(prefix)).collect())
    }
}

/// A merchant's payments with this reference (at most 10,000), open or finished, by id.
pub(crate) fn by_reference(
    journal: &journal::Journal,
    merchant: MerchantId,
    reference: &str,
) -> Result<Vec<PaymentId>, EngineError> {
    let prefix = reference_prefix(merchant, reference);
    let mut ids = Vec::new();
    for (key, _) in journal.history_scan(&prefix, None, 10_000)? {
        let id = key[prefix.len()..]
            .try_into()
            .map(u128::from_be_bytes)
            .map_err(|_| EngineError::Config("history store: a reference key has the wrong length".into()))?;
        ids.push(PaymentId(id));
    }
    Ok(ids)
}

/// The finished payments of the batch `id` belongs to, in id order (for listings).
fn batch_finished(journal: &journal::Journal, id: PaymentId) -> Result<Vec<PaymentRecord>, EngineError> {
    let groups = journal.history_scan(&group_prefix(id), None, usize::MAX)?;
    decode_groups(groups.into_iter().map(|(_, value)| value))
}

/// The records of some groups, merged in id order.
fn decode_groups(values: impl Iterator<Item = Vec<u8>>) -> Result<Vec<PaymentRecord>, EngineError> {
    let mut records = Vec::new();
    for value in values {
        records.extend(decode::<Vec<PaymentRecord>>(&value)?);
    }
    records.sort_unstable_by_key(|record| record.payment.id);
    Ok(records)
}

/// Finished payments by id, in the order of `ids`. Per batch, one read of its groups' keys
/// (each names its first and last row), then one read of the groups whose rows span a wanted
/// id: at most one per commit that finished payments of the batch.
pub(crate) fn finished_many(
    journal: &journal::Journal,
    ids: &[PaymentId],
) -> Result<Vec<Option<PaymentRecord>>, EngineError> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let mut out = vec![None; ids.len()];
    for run in order.chunk_by(|&a, &b| ids[a].0 >> 32 == ids[b].0 >> 32) {
        let prefix = group_prefix(ids[run[0]]);
        let keys = journal.history_keys_many(std::slice::from_ref(&prefix), usize::MAX)?.pop().unwrap_or_default();
        let spans = |key: &Vec<u8>| {
            let rows = &key[prefix.len()..];
            run.iter().any(|&i| rows.len() == 8 && rows[..4] <= row(ids[i])[..] && row(ids[i])[..] <= rows[4..])
        };
        let wanted: Vec<Vec<u8>> = keys.into_iter().filter(spans).collect();
        let records = decode_groups(journal.history_many(&wanted)?.into_iter().flatten())?;
        for &i in run {
            out[i] = records.binary_search_by_key(&ids[i], |r| r.payment.id).ok().map(|at| records[at].clone());
        }
    }
    Ok(out)
}

/// Finished payments after `after` in id order that `keep` accepts: at most `limit` of them,
/// examining at most `scan` records (and always whole batches' groups). Returns them and the
/// last id examined, from which a next page goes on (`None` when the store has no more).
pub(crate) fn finished_payments(
    journal: &journal::Journal,
    after: Option<PaymentId>,
    limit: usize,
    scan: usize,
    keep: impl Fn(&PaymentRecord) -> bool,
) -> Result<(Vec<PaymentRecord>, Option<PaymentId>), EngineError> {
    // The cursor's batch first (its later payments), then each batch after it.
    let mut from = after.map_or_else(|| vec![PAYMENTS], group_prefix);
    let (mut found, mut examined, mut last) = (Vec::new(), 0usize, None);
    loop {
        let Some((key, _)) = journal.history_scan(&[PAYMENTS], Some(&from), 1)?.pop() else {
            return Ok((found, None));
        };
        let upper = key
            .get(1..13)
            .ok_or_else(|| EngineError::Config("history store: a payment group key is too short".into()))?;
        let mut id = [0u8; 16];
        id[..12].copy_from_slice(upper);
        let batch = PaymentId(u128::from_be_bytes(id));
        for record in batch_finished(journal, batch)? {
            if after.is_some_and(|after| record.payment.id <= after) {
                continue;
            }
            examined += 1;
            last = Some(record.payment.id);
            if keep(&record) {
                found.push(record);
                if found.len() == limit {
                    return Ok((found, last));
                }
            }
        }
        if examined >= scan {
            return Ok((found, last.or(after)));
        }
        // Past every group of this batch: its prefix, then more than a row's bytes.
        from = [group_prefix(batch), vec![0xff; 5]].concat();
    }
}

impl Engine {
    /// A payment, open (from memory) or finished (from the history store).
    pub fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, EngineError> {
        if let Some(record) = self.state.book.payments.get(&id) {
            return Ok(Some(record.clone()));
        }
        Ok(finished_many(&self.journal, &[id])?.pop().flatten())
    }

    /// A settlement, open or finished.
    pub fn settlement(&self, id: SettlementId) -> Result<Option<SettlementRecord>, EngineError> {
        if let Some(record) = self.state.book.settlements.get(&id) {
            return Ok(Some(record.clone()));
        }
        self.journal.history(&key(SETTLEMENT, id.0))?.map(|bytes| decode(&bytes)).transpose()
    }

    /// A batch, open or finished.
    pub fn batch(&self, id: BatchId) -> Result<Option<BatchRecord>, EngineError> {
        if let Some(record) = self.state.book.batches.get(&id) {
            return Ok(Some(record.clone()));
        }
        self.journal.history(&key(BATCH, id.0))?.map(|bytes| decode(&bytes)).transpose()
    }

    /// The payments a merchant gave `reference` (open ones and finished ones), by id (from the
    /// index written at intake).
    pub fn payments_by_reference(&self, merchant: MerchantId, reference: &str) -> Result<Vec<PaymentId>, EngineError> {
        by_reference(&self.journal, merchant, reference)
    }
}
