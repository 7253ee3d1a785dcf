//! `Book`: the payments and settlements derived from the event stream. `apply` is the single
//! place where events become state; it checks every arrow against the state machine and either
//! applies an event whole or rejects it and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{BatchId, MerchantId, PaymentId, SettlementId, Timestamp};
use crate::payment::{IllegalTransition, Payment, PaymentState};
use crate::settlement::{DeathProof, Settlement, SignedTx, Spend};
use crate::{event::Event, open::Payments, retired::Retired};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment: Payment,
    pub state: PaymentState,
    /// 1 for the first attempt, incremented by each reissue.
    pub attempt: u32,
    /// The settlement of the current (or last) attempt.
    pub settlement: Option<SettlementId>,
    /// Its states so far with when it entered each (the first and the last `STEPS_MAX - 1`).
    pub steps: Vec<Step>,
    /// Why it was last held, failed or resolved, in words.
    pub reason: Option<String>,
}

/// One state a payment entered, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub state: PaymentState,
    pub at: Timestamp,
}

/// Most steps a payment record keeps (one reissued many times keeps its first and latest).
pub const STEPS_MAX: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SettlementState {
    Planned,
    Released,
    Signed,
    Broadcast,
    Confirmed { depth: u32 },
    Final,
    Dead,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    pub settlement: Settlement,
    pub state: SettlementState,
    /// Every version signed for it, the first and then each replacement; all share one spend.
    pub txs: Vec<SignedTx>,
    /// The txids among `txs` that are cancels (they pay nobody).
    pub cancels: Vec<[u8; 32]>,
    /// Children signed to pull a version in (child pays for parent), each spending an output
    /// of one of `txs`; they pay nobody but the rail itself.
    pub children: Vec<SignedTx>,
}

impl SettlementRecord {
    /// The children of version `txid` (each spends one of its outputs), in the order signed.
    pub fn children_of(&self, txid: &[u8; 32]) -> Vec<SignedTx> {
        self.children.iter().filter(|child| child.spends_from(txid)).cloned().collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub merchant: MerchantId,
    /// How many payments the batch has; `payments` holds them all once its commit is applied.
    pub count: u32,
    pub payments: Vec<PaymentId>,
    /// Payments of the batch not yet settled or failed; at 0 the batch leaves the book.
    pub open: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("batch {0} already exists")]
    DuplicateBatch(BatchId),
    #[error("payment {0} already exists")]
    DuplicatePayment(PaymentId),
    #[error("settlement {0} already exists")]
    DuplicateSettlement(SettlementId),
    #[error("unknown payment {0}")]
    UnknownPayment(PaymentId),
    #[error("unknown settlement {0}")]
    UnknownSettlement(SettlementId),
    #[error("payment {payment}: {source}")]
    Transition { payment: PaymentId, source: IllegalTransition },
    #[error("settlement {settlement} cannot go from {from:?} on {event}")]
    SettlementState { settlement: SettlementId, from: SettlementState, event: &'static str },
    #[error("settlement {settlement} leg for payment {payment} does not match the payment")]
    LegMismatch { settlement: SettlementId, payment: PaymentId },
    #[error("settlement {settlement}: replacement spends different inputs or nonce")]
    SpendMismatch { settlement: SettlementId },
    #[error("settlement {settlement}: transaction is not one railyard signed for it")]
    UnknownTx { settlement: SettlementId },
    #[error("settlement {settlement}: its cancel confirmed, which pays nobody; only a proof of death can follow")]
    CancelIsNotPayment { settlement: SettlementId },
    #[error("payment {payment} is not part of settlement {settlement}")]
    WrongSettlement { payment: PaymentId, settlement: SettlementId },
    #[error("batch {batch}: {reason}")]
    BatchShape { batch: BatchId, reason: &'static str },
}

/// The open payments, settlements and batches, as the journal says they are. Finished ones
/// leave the book (see `Retired`), so its size follows active work, not history; the count of
/// payments per state covers history too. `open` indexes the settlements still to be acted on
/// (planned, signed, broadcast or confirmed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    /// Hashed by id, iterated and encoded in id order (see `open`).
    pub payments: Payments,
    pub settlements: BTreeMap<SettlementId, SettlementRecord>,
    pub batches: BTreeMap<BatchId, BatchRecord>,
    open: BTreeSet<SettlementId>,
    counts: BTreeMap<PaymentState, u64>,
    /// Not state: what the last events retired, until the caller takes it.
    #[serde(skip)]
    retired: Retired,
    /// Not state: the time and reason of the event being applied, for the payments' steps.
    #[serde(skip)]
    applying: (Timestamp, Option<String>),
}

impl Book {
    /// Applies one event whole, or returns why not and leaves the book unchanged.
    pub fn apply(&mut self, event: &Event) -> Result<(), BookError> {
        self.applying = (event.at(), reason_of(event));
        let outcome = self.apply_event(event);
        self.applying = (Timestamp::default(), None);
        outcome
    }

    fn apply_event(&mut self, event: &Event) -> Result<(), BookError> {
        match event {
            Event::BatchAccepted { batch, merchant, count, payments, .. } => {
                self.accept(*batch, *merchant, *count, payments)
            }
            Event::PaymentsAccepted { batch, payments, .. } => self.accept_more(*batch, payments),
            Event::PaymentsQueued { payments, .. } => {
                check_unique(payments)?;
                self.move_payments(payments, PaymentState::Queued)
            }
            Event::SettlementPlanned { settlement, .. } => self.plan(settlement),
            Event::SettlementReleased { settlement, .. } => {
                self.move_settlement(*settlement, "released", PaymentState::Queued, |s| {
                    matches!(s, SettlementState::Planned).then_some(SettlementState::Released)
                })
            }
            Event::SettlementSigned { settlement, tx, .. } => {
                self.move_settlement(*settlement, "signed", PaymentState::Signed, |s| {
                    matches!(s, SettlementState::Planned).then_some(SettlementState::Signed)
                })?;
                self.record_mut(*settlement)?.txs.push(tx.clone());
                Ok(())
            }
            Event::SettlementBroadcast { settlement, txid, .. } => self.broadcast(*settlement, txid),
            Event::SettlementReplaced { settlement, tx, .. } => self.replace(*settlement, tx, false),
            Event::SettlementCancelling { settlement, tx, .. } => self.replace(*settlement, tx, true),
            Event::SettlementAccelerated { settlement, child, .. } => self.accelerate(*settlement, child),
            Event::SettlementConfirmed { settlement, txid, depth, .. } => {
                self.check_txid(*settlement, txid)?;
                // A confirmed cancel pays nobody: the payments stay watched (in flight) until
                // the cancel is final and proves the attempt dead.
                let to =
                    if self.is_cancel(*settlement, txid) { PaymentState::Broadcast } else { PaymentState::Confirmed };
                let depth = *depth;
                self.move_settlement(*settlement, "confirmed", to, |s| match s {
                    SettlementState::Broadcast | SettlementState::Confirmed { .. } => {
                        Some(SettlementState::Confirmed { depth })
                    }
                    _ => None,
                })
            }
            Event::SettlementReorged { settlement, .. } => {
                self.move_settlement(*settlement, "reorged", PaymentState::Broadcast, |s| {
                    matches!(s, SettlementState::Confirmed { .. }).then_some(SettlementState::Broadcast)
                })
            }
            Event::SettlementFinal { settlement, txid, .. } => {
                self.check_txid(*settlement, txid)?;
                if self.is_cancel(*settlement, txid) {
                    return Err(BookError::CancelIsNotPayment { settlement: *settlement });
                }
                self.move_settlement(*settlement, "final", PaymentState::Settled, |s| {
                    matches!(s, SettlementState::Confirmed { .. }).then_some(SettlementState::Final)
                })
            }
            Event::SettlementDead { settlement, proof, .. } => self.dead(*settlement, proof),
            Event::PaymentHeld { payment, .. } => {
                let in_flight = self.payment(*payment)?.state.is_in_flight();
                self.move_payments(&[*payment], PaymentState::Held { in_flight })
            }
            Event::PaymentFailed { payment, .. } => self.move_payments(&[*payment], PaymentState::Failed),
            // Liquidity is the pools' business, notifications the outbox's.
            Event::PoolFunded { .. }
            | Event::Notifications { .. }
            | Event::NotificationsDelivered { .. }
            | Event::RailPaused { .. }
            | Event::RailResumed { .. }
            | Event::RailDrained { .. }
            | Event::FinalityLost { .. }
            | Event::FinalityRestored { .. }
            | Event::ApiKeyCreated { .. }
            | Event::ApiKeyRevoked { .. }
            | Event::WebhookEndpointSet { .. }
            | Event::PoolThresholdsSet { .. }
            | Event::ClassSet { .. }
            | Event::RoutingRulesSet { .. }
            | Event::GuardsSet { .. }
            | Event::PaymentGuarded { .. }
            | Event::PaymentApproved { .. } => Ok(()),
            Event::PaymentResolved { payment, resolution, .. } => {
                let to = match resolution {
                    crate::event::Resolution::Retry => PaymentState::Queued,
                    crate::event::Resolution::Fail => PaymentState::Failed,
                    crate::event::Resolution::Resume => PaymentState::Broadcast,
                };
                self.move_payments(&[*payment], to)
            }
            Event::PaymentReissued { payment, previous, .. } => {
                if self.payment(*payment)?.settlement != Some(*previous) {
                    return Err(BookError::WrongSettlement { payment: *payment, settlement: *previous });
                }
                self.move_payments(&[*payment], PaymentState::Reissued)?;
                let record = self.payments.get_mut(payment).expect("checked above");
                record.attempt = record.attempt.checked_add(1).expect("attempt count fits u32");
                Ok(())
            }
        }
    }

    /// A hash of the whole book, equal for equal books (every map encodes in key order).
    pub fn state_hash(&self) -> [u8; 32] {
        let bytes = postcard::to_stdvec(self).expect("the book serializes");
        *blake3::hash(&bytes).as_bytes()
    }

    /// Settlements planned, signed, broadcast or confirmed: the ones still to be acted on.
    pub fn open_settlements(&self) -> &BTreeSet<SettlementId> {
        &self.open
    }

    /// What left the book since the last `take_retired`.
    pub fn retired(&self) -> &Retired {
        &self.retired
    }

    /// Takes what left the book since the last call.
    pub fn take_retired(&mut self) -> Retired {
        std::mem::take(&mut self.retired)
    }

    /// Takes back what `take_retired` gave, emptied: its lists keep their capacity for the
    /// next events instead of growing anew for each settlement that finishes.
    pub fn reuse_retired(&mut self, mut spent: Retired) {
        if self.retired.is_empty() {
            spent.clear();
            self.retired = spent;
        }
    }

    /// How many payments are in `state` (finished ones included).
    pub fn count(&self, state: PaymentState) -> u64 {
        self.counts.get(&state).copied().unwrap_or(0)
    }

    /// Payments per state (states with none are left out).
    pub fn counts(&self) -> &BTreeMap<PaymentState, u64> {
        &self.counts
    }

    /// Whether every payment is settled, failed or held: nothing left to do without an operator.
    pub fn is_quiet(&self) -> bool {
        self.counts
            .iter()
            .all(|(state, n)| *n == 0 || state.is_terminal() || matches!(state, PaymentState::Held { .. }))
    }

    fn count_moves(&mut self, from: Option<PaymentState>, to: PaymentState, moved: u64) {
        if let Some(from) = from {
            let n = self.counts.get_mut(&from).expect("a payment's state is counted");
            *n -= moved;
            if *n == 0 {
                self.counts.remove(&from);
            }
        }
        *self.counts.entry(to).or_insert(0) += moved;
    }

    pub fn payment(&self, id: PaymentId) -> Result<&PaymentRecord, BookError> {
        self.payments.get(&id).ok_or(BookError::UnknownPayment(id))
    }

    pub fn settlement(&self, id: SettlementId) -> Result<&SettlementRecord, BookError> {
        self.settlements.get(&id).ok_or(BookError::UnknownSettlement(id))
    }

    fn record_mut(&mut self, id: SettlementId) -> Result<&mut SettlementRecord, BookError> {
        self.settlements.get_mut(&id).ok_or(BookError::UnknownSettlement(id))
    }

    fn accept(
        &mut self,
        batch: BatchId,
        merchant: MerchantId,
        count: u32,
        payments: &[Payment],
    ) -> Result<(), BookError> {
        if self.batches.contains_key(&batch) {
            return Err(BookError::DuplicateBatch(batch));
        }
        if count == 0 {
            return Err(BookError::BatchShape { batch, reason: "a batch has at least one payment" });
        }
        let record = BatchRecord { merchant, count, payments: Vec::new(), open: 0 };
        self.check_new_payments(batch, &record, payments)?;
        self.batches.insert(batch, record);
        self.insert_payments(batch, payments);
        Ok(())
    }

    fn accept_more(&mut self, batch: BatchId, payments: &[Payment]) -> Result<(), BookError> {
        let record = self.batches.get(&batch).ok_or(BookError::BatchShape { batch, reason: "unknown batch" })?;
        self.check_new_payments(batch, record, payments)?;
        self.insert_payments(batch, payments);
        Ok(())
    }

    /// New payments must belong to the batch and its merchant, be new, and fit the batch's count.
    fn check_new_payments(&self, batch: BatchId, record: &BatchRecord, payments: &[Payment]) -> Result<(), BookError> {
        if record.payments.len() + payments.len() > record.count as usize {
            return Err(BookError::BatchShape { batch, reason: "more payments than the batch's count" });
        }
        for payment in payments {
            if payment.batch != batch || payment.merchant != record.merchant {
                return Err(BookError::BatchShape { batch, reason: "a payment names another batch or merchant" });
            }
            if self.payments.contains_key(&payment.id) {
                return Err(BookError::DuplicatePayment(payment.id));
            }
        }
        // Intake numbers a batch's payments in row order: then no id can repeat.
        if payments.windows(2).all(|w| w[0].id < w[1].id) {
            return Ok(());
        }
        check_unique(&payments.iter().map(|p| p.id).collect::<Vec<_>>())
    }

    fn insert_payments(&mut self, batch: BatchId, payments: &[Payment]) {
        for payment in payments {
            // Room for its first steps (accepted, queued, planned, signed) without regrowing.
            let mut steps = Vec::with_capacity(4);
            steps.push(Step { state: PaymentState::Accepted, at: self.applying.0 });
            let record = Box::new(PaymentRecord {
                payment: payment.clone(),
                state: PaymentState::Accepted,
                attempt: 1,
                settlement: None,
                steps,
                reason: None,
            });
            self.payments.insert(payment.id, record);
        }
        self.count_moves(None, PaymentState::Accepted, payments.len() as u64);
        let record = self.batches.get_mut(&batch).expect("checked by the caller");
        record.payments.extend(payments.iter().map(|p| p.id));
        record.open += u32::try_from(payments.len()).expect("within the batch's count");
    }

    /// Checks every payment can take the arrow, then moves them all (distinct ids: `check_unique`).
    fn move_payments(&mut self, ids: &[PaymentId], to: PaymentState) -> Result<(), BookError> {
        for id in ids {
            let from = self.payment(*id)?.state;
            from.transition(to).map_err(|source| BookError::Transition { payment: *id, source })?;
        }
        // The counts per state move once per event, not once per payment.
        let mut from_states: Vec<(PaymentState, u64)> = Vec::new();
        for id in ids {
            let record = self.payments.get_mut(id).expect("checked above");
            let from = std::mem::replace(&mut record.state, to);
            if record.steps.len() >= STEPS_MAX {
                record.steps.remove(1);
            }
            record.steps.push(Step { state: to, at: self.applying.0 });
            if let Some(reason) = &self.applying.1 {
                record.reason = Some(reason.clone());
            }
            match from_states.iter_mut().find(|(state, _)| *state == from) {
                Some((_, n)) => *n += 1,
                None => from_states.push((from, 1)),
            }
            if to.is_terminal() {
                self.retire_payment(*id);
            }
        }
        for (from, n) in from_states {
            self.count_moves(Some(from), to, n);
        }
        Ok(())
    }

    /// A finished payment leaves the book, and its batch with its last open payment.
    fn retire_payment(&mut self, id: PaymentId) {
        let record = self.payments.remove(&id).expect("a payment being moved exists");
        let batch = record.payment.batch;
        self.retired.payments.push(record);
        let open = {
            let entry = self.batches.get_mut(&batch).expect("a payment's batch is open while it is");
            entry.open -= 1;
            entry.open
        };
        if open == 0 {
            let entry = self.batches.remove(&batch).expect("checked above");
            self.retired.batches.push((batch, entry));
        }
    }

    fn plan(&mut self, settlement: &Settlement) -> Result<(), BookError> {
        if self.settlements.contains_key(&settlement.id) {
            return Err(BookError::DuplicateSettlement(settlement.id));
        }
        let ids: Vec<PaymentId> = settlement.legs.iter().map(|leg| leg.payment).collect();
        for leg in &settlement.legs {
            let payment = &self.payment(leg.payment)?.payment;
            let matches = payment.amount == leg.amount
                && payment.destination == leg.destination
                && payment.asset == settlement.asset
                && payment.networks.contains(&settlement.network);
            if !matches {
                return Err(BookError::LegMismatch { settlement: settlement.id, payment: leg.payment });
            }
        }
        // A payment paid twice by one settlement: its second leg does not match it.
        check_unique(&ids).map_err(|error| match error {
            BookError::DuplicatePayment(twice) => BookError::LegMismatch { settlement: settlement.id, payment: twice },
            other => other,
        })?;
        self.move_payments(&ids, PaymentState::Planned)?;
        for id in &ids {
            self.payments.get_mut(id).expect("checked above").settlement = Some(settlement.id);
        }
        let record = SettlementRecord {
            settlement: settlement.clone(),
            state: SettlementState::Planned,
            txs: Vec::new(),
            cancels: Vec::new(),
            children: Vec::new(),
        };
        self.settlements.insert(settlement.id, record);
        self.open.insert(settlement.id);
        Ok(())
    }

    /// Moves a settlement by `next` (None: not from its state) and its payments, all or nothing.
    fn move_settlement(
        &mut self,
        id: SettlementId,
        event: &'static str,
        payments_to: PaymentState,
        next: impl Fn(SettlementState) -> Option<SettlementState>,
    ) -> Result<(), BookError> {
        let record = self.settlement(id)?;
        let from = record.state;
        let to = next(from).ok_or(BookError::SettlementState { settlement: id, from, event })?;
        let ids: Vec<PaymentId> = record.settlement.legs.iter().map(|leg| leg.payment).collect();
        // A payment held in flight stays held while its settlement is only being watched; the
        // chain's final outcomes (settled, rolled back) apply to it like to any other.
        let watching = matches!(payments_to, PaymentState::Broadcast | PaymentState::Confirmed);
        let held = PaymentState::Held { in_flight: true };
        // A payment no longer in the book finished on its own (failed while planned, say): the
        // settlement's arrows leave it alone.
        let movable: Vec<PaymentId> = ids
            .into_iter()
            .filter(|p| {
                self.payments.get(p).is_some_and(|record| {
                    let state = record.state;
                    state != payments_to && !(watching && state == held)
                })
            })
            .collect();
        self.move_payments(&movable, payments_to)?;
        self.record_mut(id)?.state = to;
        if matches!(to, SettlementState::Released | SettlementState::Final | SettlementState::Dead) {
            self.open.remove(&id);
            let record = self.settlements.remove(&id).expect("checked above");
            self.retired.settlements.push(record);
        }
        Ok(())
    }

    fn broadcast(&mut self, id: SettlementId, txid: &[u8; 32]) -> Result<(), BookError> {
        self.check_txid(id, txid)?;
        // Re-broadcasting the same bytes (after a restart, or a drop) is harmless and allowed.
        self.move_settlement(id, "broadcast", PaymentState::Broadcast, |s| match s {
            SettlementState::Signed | SettlementState::Broadcast => Some(SettlementState::Broadcast),
            _ => None,
        })
    }

    fn is_cancel(&self, id: SettlementId, txid: &[u8; 32]) -> bool {
        self.settlements.get(&id).is_some_and(|r| r.cancels.contains(txid))
    }

    fn replace(&mut self, id: SettlementId, tx: &SignedTx, cancel: bool) -> Result<(), BookError> {
        let record = self.settlement(id)?;
        if !matches!(record.state, SettlementState::Signed | SettlementState::Broadcast) {
            return Err(BookError::SettlementState { settlement: id, from: record.state, event: "replaced" });
        }
        let first = record.txs.first().expect("a signed settlement has a transaction");
        if first.spend != tx.spend {
            return Err(BookError::SpendMismatch { settlement: id });
        }
        let record = self.record_mut(id)?;
        record.txs.push(tx.clone());
        if cancel {
            record.cancels.push(tx.txid);
        }
        Ok(())
    }

    /// A child for an unconfirmed settlement that was broadcast: it must spend an output of
    /// one of the settlement's versions, and be none of them.
    fn accelerate(&mut self, id: SettlementId, child: &SignedTx) -> Result<(), BookError> {
        let record = self.settlement(id)?;
        if record.state != SettlementState::Broadcast {
            return Err(BookError::SettlementState { settlement: id, from: record.state, event: "accelerated" });
        }
        let Spend::Inputs(inputs) = &child.spend else {
            return Err(BookError::SpendMismatch { settlement: id });
        };
        let own = |txid: &[u8; 32]| record.txs.iter().any(|tx| &tx.txid == txid);
        if inputs.is_empty() || own(&child.txid) || !record.txs.iter().any(|tx| child.spends_from(&tx.txid)) {
            return Err(BookError::UnknownTx { settlement: id });
        }
        self.record_mut(id)?.children.push(child.clone());
        Ok(())
    }

    fn dead(&mut self, id: SettlementId, proof: &DeathProof) -> Result<(), BookError> {
        let record = self.settlement(id)?;
        let own_tx = |txid: &[u8; 32]| record.txs.iter().any(|tx| &tx.txid == txid);
        // A conflicting final transaction must not be one of ours (then the payment was paid);
        // a final revert must be one of our paying versions; a final cancel one of our cancels.
        let proof_ok = match proof {
            DeathProof::ConflictFinal { txid } => !own_tx(txid),
            DeathProof::RevertedFinal { txid } => own_tx(txid) && !record.cancels.contains(txid),
            DeathProof::CancelFinal { txid } => record.cancels.contains(txid),
        };
        if !proof_ok {
            return Err(BookError::UnknownTx { settlement: id });
        }
        self.move_settlement(id, "dead", PaymentState::RolledBack, |s| match s {
            SettlementState::Signed | SettlementState::Broadcast | SettlementState::Confirmed { .. } => {
                Some(SettlementState::Dead)
            }
            _ => None,
        })
    }

    fn check_txid(&self, id: SettlementId, txid: &[u8; 32]) -> Result<(), BookError> {
        let record = self.settlement(id)?;
        if record.txs.iter().any(|tx| &tx.txid == txid) { Ok(()) } else { Err(BookError::UnknownTx { settlement: id }) }
    }
}

/// A list of payment ids names each payment once.
fn check_unique(ids: &[PaymentId]) -> Result<(), BookError> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    match sorted.windows(2).find(|w| w[0] == w[1]) {
        Some(twice) => Err(BookError::DuplicatePayment(twice[0])),
        None => Ok(()),
    }
}

/// The words an event gives for what it does to a payment, if any.
fn reason_of(event: &Event) -> Option<String> {
    match event {
        Event::PaymentHeld { reason, .. } => Some(format!("held: {reason}")),
        Event::PaymentFailed { reason, .. } => Some(format!("failed: {reason}")),
        Event::PaymentResolved { resolution, operator, reason, .. } => {
            Some(format!("resolved ({resolution:?}) by {operator}: {reason}"))
        }
        Event::SettlementDead { proof, .. } => Some(format!("its attempt is provably dead: {proof:?}")),
        _ => None,
    }
}
