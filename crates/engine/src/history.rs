//! The history store: finished payments, settlements and batches leave memory and are kept in
//! the journal's history table, written in the same commit as the events that finished them.
//! Keys are a one-byte kind and big-endian ids, so scans run in id order:
//!
//! - `p` payment id → the payment's last record (postcard)
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

pub(crate) const PAYMENT: u8 = b'p';
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

/// The history writes for what left the book: records, the reference index, and (when
/// `destination_totals`) per destination the amount a final settlement paid it.
pub(crate) fn ops(retired: &Retired, destination_totals: bool) -> Vec<HistoryOp> {
    let mut ops = Vec::new();
    for record in &retired.payments {
        ops.push(put(key(PAYMENT, record.payment.id.0), record));
    }
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

/// Finished payments after `after` in id order that `keep` accepts: at most `limit` of them,
/// examining at most `scan` records. Returns them and the last id examined, from which a next
/// page goes on (`None` when the store has no more).
pub(crate) fn finished_payments(
    journal: &journal::Journal,
    after: Option<PaymentId>,
    limit: usize,
    scan: usize,
    keep: impl Fn(&PaymentRecord) -> bool,
) -> Result<(Vec<PaymentRecord>, Option<PaymentId>), EngineError> {
    let start = after.map(|id| key(PAYMENT, id.0));
    let rows = journal.history_scan(&[PAYMENT], start.as_deref(), scan)?;
    let exhausted = rows.len() < scan;
    let mut found = Vec::new();
    let mut last = None;
    for (_, value) in rows {
        let record: PaymentRecord = decode(&value)?;
        last = Some(record.payment.id);
        if keep(&record) {
            found.push(record);
            if found.len() == limit {
                return Ok((found, last));
            }
        }
    }
    Ok((found, if exhausted { None } else { last }))
}

impl Engine {
    /// A payment, open (from memory) or finished (from the history store).
    pub fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, EngineError> {
        if let Some(record) = self.state.book.payments.get(&id) {
            return Ok(Some(record.clone()));
        }
        self.journal.history(&key(PAYMENT, id.0))?.map(|bytes| decode(&bytes)).transpose()
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
