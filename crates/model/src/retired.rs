//! What left the book: the records a caller moves to its history store.

use crate::{BatchId, BatchRecord, PaymentRecord, SettlementRecord};

/// What left the book with the last events: finished payments (settled or failed),
/// settlements (final, dead or released) and batches whose payments all finished. The caller
/// moves them to its history store in the same commit as those events, then takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    /// Boxed as the book holds them: a record is a few hundred bytes, and it moves twice on its
    /// way to the history store.
    pub payments: Vec<Box<PaymentRecord>>,
    pub settlements: Vec<SettlementRecord>,
    pub batches: Vec<(BatchId, BatchRecord)>,
}

impl Retired {
    pub fn is_empty(&self) -> bool {
        self.payments.is_empty() && self.settlements.is_empty() && self.batches.is_empty()
    }

    /// Empties the lists, keeping their capacity.
    pub fn clear(&mut self) {
        self.payments.clear();
        self.settlements.clear();
        self.batches.clear();
    }
}
