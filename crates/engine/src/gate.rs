//! The record gate: how the engine's decisions become durable before anything acts on them.
//! `stage` applies an event to the state and queues it (with the history writes of what it
//! finished and, when a read model is attached, what it touched); `commit` appends everything
//! staged as one journal append; `commit_and_act` then runs the effects. A refusal of an event
//! the engine built, or a failed commit, stops the engine for good (`stop`); a refusal of a
//! caller's input (`stage_input`) is the caller's error and changes nothing.
//!
//! Inside one call the engine may hand an append to the journal's writer and go on deciding
//! while the writer makes it durable (`send_staged`, then `until_durable`): a group of
//! merchants' batches is written batch by batch while the next one is checked, and waits
//! once. Nothing leaves the process in between (no effect, no answer, no read model), every
//! `commit` waits for all of them, and every public method waits for them before it returns;
//! the first failure among them stops the engine. Decisions never read what the writer's
//! timing decides: ids come from `decided_tip` (the journal's tip plus the records in
//! flight), and reads of claims, references and the guards' index add what is in flight. A
//! round still makes one commit, before its effects.

use std::collections::BTreeSet;

use journal::{Append, Appended, Claim, HistoryOp, Ticket};
use model::*;

use crate::{Engine, EngineError, derived, history};

impl Engine {
    /// Every entry point starts here: a stopped engine does nothing more.
    pub(crate) fn running(&self) -> Result<(), EngineError> {
        if (self.standby.is_some() && !self.admitting) || (self.commanding && !self.coordinates()) {
            return Err(EngineError::Standby);
        }
        if let Some(reason) = &self.stopped {
            return Err(EngineError::Stopped(reason.clone()));
        }
        if self.shared && !self.in_turn {
            // Deciding from a state other nodes may have moved past would append out of
            // order: a shared engine acts only in its turn.
            let why = self.turn_refused.as_deref().unwrap_or("it was not asked for");
            return Err(EngineError::Journal(journal::JournalError::Storage(format!(
                "this node could not take its turn on the shared journal ({why}); nothing changed, try again"
            ))));
        }
        Ok(())
    }

    pub(crate) fn stop(&mut self, reason: String) -> EngineError {
        tracing::error!(%reason, "engine stopped");
        self.staged.clear();
        self.effects.clear();
        self.history.clear();
        self.finished.clear();
        self.in_flight = InFlight::default();
        self.stopped = Some(reason.clone());
        EngineError::Stopped(reason)
    }

    /// Applies events the engine decided to its state and stages them for the next commit. A
    /// refusal means the engine built an event its own state rejects: a bug, so it stops.
    pub(crate) fn stage(&mut self, events: Vec<Event>) -> Result<(), EngineError> {
        self.running()?;
        let events = self.with_notifications(events);
        for event in events {
            let queued = self.queued_by(&event);
            self.note_touched(&event);
            if let Err(error) = self.state.apply(&event) {
                return Err(self.stop(format!("state refused {event:?}: {error}")));
            }
            self.after_apply(event, queued);
        }
        Ok(())
    }

    /// Stages one event that carries a caller's input (an operator or treasury command). The
    /// state applies an event whole or not at all, so a refusal is the caller's error and
    /// changes nothing.
    pub(crate) fn stage_input(&mut self, event: Event) -> Result<(), EngineError> {
        self.running()?;
        let queued = self.queued_by(&event);
        self.state.apply(&event).map_err(|error| EngineError::Refused(error.to_string()))?;
        self.note_touched(&event);
        self.after_apply(event, queued);
        Ok(())
    }

    /// The payments an event puts back into Queued (read before it applies: a released
    /// settlement leaves the book).
    pub(crate) fn queued_by(&self, event: &Event) -> Vec<PaymentId> {
        match event {
            Event::PaymentsQueued { payments, .. } => payments.clone(),
            Event::PaymentResolved { payment, resolution: Resolution::Retry, .. } => vec![*payment],
            Event::SettlementReleased { settlement, .. } => self
                .state
                .book
                .settlements
                .get(settlement)
                .map(|r| r.settlement.legs.iter().map(|l| l.payment).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Notes the payments and batches an event changes (read before it applies: settlements
    /// and payments it finishes leave the book), for the read model.
    pub(crate) fn note_touched(&mut self, event: &Event) {
        if !self.track_changes {
            return;
        }
        let book = &self.state.book;
        let mut payments: Vec<PaymentId> = Vec::new();
        match event {
            Event::BatchAccepted { batch, payments: new, .. }
            | Event::PaymentsAccepted { batch, payments: new, .. } => {
                payments.extend(new.iter().map(|p| p.id));
                self.touched_batches.insert(*batch);
            }
            Event::PaymentsQueued { payments: queued, .. } => payments.extend(queued),
            Event::PaymentHeld { payment, .. }
            | Event::PaymentFailed { payment, .. }
            | Event::PaymentReissued { payment, .. }
            | Event::PaymentResolved { payment, .. } => payments.push(*payment),
            Event::SettlementPlanned { settlement, .. } => {
                self.touched_settlements.insert(settlement.id);
                payments.extend(settlement.legs.iter().map(|l| l.payment));
            }
            Event::SettlementFinal { settlement, fee_paid, .. } => {
                self.touched_settlements.insert(*settlement);
                if let Some(record) = book.settlements.get(settlement) {
                    let s = &record.settlement;
                    payments.extend(s.legs.iter().map(|l| l.payment));
                    let totals = self.settled_totals.entry((s.rail, s.asset)).or_default();
                    totals.settlements += 1;
                    totals.payouts += s.legs.len() as u64;
                    for leg in &s.legs {
                        totals.amount = totals.amount.checked_add(leg.amount).unwrap_or(totals.amount);
                    }
                    totals.fee_asset = Some(s.fee_asset);
                    totals.fees = totals.fees.checked_add(*fee_paid).unwrap_or(totals.fees);
                }
            }
            Event::SettlementReleased { settlement, .. }
            | Event::SettlementSigned { settlement, .. }
            | Event::SettlementBroadcast { settlement, .. }
            | Event::SettlementReplaced { settlement, .. }
            | Event::SettlementCancelling { settlement, .. }
            | Event::SettlementAccelerated { settlement, .. }
            | Event::SettlementConfirmed { settlement, .. }
            | Event::SettlementReorged { settlement, .. }
            | Event::SettlementDead { settlement, .. } => {
                self.touched_settlements.insert(*settlement);
                if let Some(record) = book.settlements.get(settlement) {
                    payments.extend(record.settlement.legs.iter().map(|l| l.payment));
                }
            }
            _ => {}
        }
        for id in payments {
            if let Some(record) = book.payments.get(&id) {
                self.touched_batches.insert(record.payment.batch);
            }
            self.touched.insert(id);
        }
    }

    /// After an event applied: its queued payments go to routing, what it finished goes to the
    /// history store with the same commit, and it is staged.
    pub(crate) fn after_apply(&mut self, event: Event, queued: Vec<PaymentId>) {
        // Only the coordinator routes: what another node admits or puts back, it routes once
        // it has caught up.
        if self.standby.is_none() && self.coordinates() {
            self.staging.waiting(queued);
        }
        let mut retired = self.state.book.take_retired();
        if !retired.is_empty() {
            self.history.extend(history::ops(&retired, self.config.reconcile_balances));
            self.history.extend(crate::guards::index_ops(&retired, &self.state.guards.policies));
            self.unwatch(&retired);
            // Written with the commit, one group per batch (`history::payment_groups`).
            self.finished.append(&mut retired.payments);
        }
        self.state.book.reuse_retired(retired);
        self.staged.push(event);
    }

    /// Settlements that left the book leave the watch; the finished ones are due for
    /// reconciliation.
    pub(crate) fn unwatch(&mut self, retired: &Retired) {
        for record in &retired.settlements {
            self.watching.remove(&record.settlement.id);
            if matches!(record.state, SettlementState::Final | SettlementState::Dead) {
                if self.reconcile_due.len() >= self.config.reconcile_settlements_max {
                    self.reconcile_due.pop_front();
                }
                self.reconcile_due.push_back(record.settlement.id);
            }
        }
    }

    /// Appends everything staged, and waits until it and every append in flight are durable.
    /// A failure stops the engine: the state holds events the journal may not, so nothing may
    /// act on it.
    pub(crate) async fn commit(&mut self) -> Result<(), EngineError> {
        self.commit_claimed(None).await.map(|_| ())
    }

    /// `commit` with an idempotency claim; the answer is the journal's to this append (`None`
    /// when nothing was staged).
    pub(crate) async fn commit_claimed(&mut self, claim: Option<Claim>) -> Result<Option<Appended>, EngineError> {
        let sent = self.send_staged(claim)?;
        let mut outcomes = self.until_durable().await?;
        Ok(if sent { outcomes.pop() } else { None })
    }

    /// Hands everything staged to the journal's writer as one append, without waiting for it
    /// (see the module's note). Returns whether there was anything to send.
    pub(crate) fn send_staged(&mut self, claim: Option<Claim>) -> Result<bool, EngineError> {
        self.running()?;
        if self.staged.is_empty() {
            return Ok(false);
        }
        let scratch = &mut self.encode_scratch;
        let payloads: Vec<Vec<u8>> = self.staged.iter().map(|event| event.encode_via(scratch)).collect();
        let mut history = std::mem::take(&mut self.history);
        history.extend(history::payment_groups(&self.finished));
        self.finished.clear();
        if self.in_flight.tickets.is_empty() {
            self.in_flight.base = self.journal.tip();
        }
        for op in &history {
            if let HistoryOp::Put { key, .. } = op {
                match key.first() {
                    Some(&crate::guards::GUARD_INDEX) => {
                        self.in_flight.index.insert(key.clone());
                    }
                    // A reference key ends with the payment's id; its prefix is what intake asks.
                    Some(&crate::history::REFERENCE) => {
                        self.in_flight.references.insert(key[..key.len().saturating_sub(16)].to_vec());
                    }
                    _ => {}
                }
            }
        }
        if let Some(claim) = &claim {
            let entry = (BatchId(claim.batch), claim.body_hash);
            self.in_flight.claims.insert((claim.merchant.clone(), claim.key.clone()), entry);
        }
        let (records, bytes) = (payloads.len() as u64, payloads.iter().map(|p| p.len() as u64).sum::<u64>());
        match self.journal.submit_append(Append { payloads, claim, history }) {
            Ok(ticket) => {
                self.staged.clear();
                self.in_flight.tickets.push(ticket);
                self.in_flight.records += records;
                self.in_flight.bytes += bytes;
                Ok(true)
            }
            // With appends in flight, the first failure is theirs (a failed commit refuses
            // every later append): it is reported when they are waited for.
            Err(error) if !self.in_flight.tickets.is_empty() => {
                self.staged.clear();
                self.in_flight.refused.get_or_insert(error);
                Ok(false)
            }
            Err(error) => Err(self.stop(format!("journal commit failed: {error}"))),
        }
    }

    /// Waits until every append in flight is durable; their answers, in order. A failed one
    /// stops the engine.
    pub(crate) async fn until_durable(&mut self) -> Result<Vec<Appended>, EngineError> {
        if self.in_flight.tickets.is_empty() {
            return Ok(Vec::new());
        }
        let in_flight = std::mem::take(&mut self.in_flight);
        let started = std::time::Instant::now();
        let mut outcomes = Vec::with_capacity(in_flight.tickets.len());
        let mut failed = None;
        for ticket in in_flight.tickets {
            match ticket.await {
                Ok(appended) => outcomes.push(appended),
                Err(error) => {
                    failed.get_or_insert(error);
                }
            }
        }
        self.commit_wait += started.elapsed();
        if let Some(error) = failed.or(in_flight.refused) {
            return Err(self.stop(format!("journal commit failed: {error}")));
        }
        self.commits += outcomes.len() as u64;
        self.bytes_since_snapshot += in_flight.bytes;
        self.committed_own();
        self.maybe_snapshot().await?;
        Ok(outcomes)
    }

    /// The journal's tip once every append in flight is durable: what ids derived from the
    /// tip are taken from, whatever the writer has finished.
    pub(crate) fn decided_tip(&self) -> u64 {
        if self.in_flight.tickets.is_empty() {
            self.journal.tip()
        } else {
            self.in_flight.base + self.in_flight.records
        }
    }

    /// The batch and body hash of an idempotency claim in flight.
    pub(crate) fn claim_in_flight(&self, merchant: MerchantId, key: &str) -> Option<(BatchId, [u8; 32])> {
        self.in_flight.claims.get(&(merchant.0.to_string(), key.to_owned())).copied()
    }

    /// Whether an append in flight takes this reference prefix (see `history::reference_ops`).
    pub(crate) fn reference_in_flight(&self, prefix: &[u8]) -> bool {
        self.in_flight.references.contains(prefix)
    }

    /// The guard index keys in flight that start with `prefix` (added to what the history
    /// store answers, so a guard's verdict does not depend on the writer's timing).
    pub(crate) fn index_in_flight<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a Vec<u8>> + 'a {
        self.in_flight.index.range(prefix.to_vec()..).take_while(move |key| key.starts_with(prefix))
    }

    /// Right after a commit the state is exactly the journal's: a snapshot taken now lets a
    /// restart skip everything before it. A snapshot that cannot be written is not fatal (the
    /// journal is whole); it is logged and tried again after the next commit.
    pub(crate) async fn maybe_snapshot(&mut self) -> Result<(), EngineError> {
        let every = self.config.snapshot_every_bytes;
        let tip = self.journal.tip();
        if self.standby.is_some() {
            // The acting node writes the snapshots of a shared journal.
            return Ok(());
        }
        // Events still staged (a round that failed before its commit) are not in the journal:
        // a snapshot now would hold them.
        if every == 0 || self.bytes_since_snapshot < every || !self.staged.is_empty() {
            return Ok(());
        }
        let state = crate::state::encode_snapshot(&self.state);
        match self.journal.write_snapshot_async(tip, state).await {
            Ok(()) => {
                tracing::info!(seq = tip, "snapshot written");
                self.bytes_since_snapshot = 0;
            }
            Err(error) => tracing::warn!(%error, "snapshot not written; tried again after the next commit"),
        }
        Ok(())
    }

    /// Commits what is staged, then runs its effects.
    pub(crate) async fn commit_and_act(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.commit().await?;
        self.run_effects(now).await
    }

    /// How many items of at most `item_bytes` encoded bytes one record carries (events that
    /// list payments or notices are split to fit the journal's record limit).
    pub(crate) fn per_record(&self, item_bytes: usize) -> usize {
        (crate::intake::chunk_bytes_max(self.config.journal.record_bytes_max) / item_bytes).max(1)
    }

    /// Adds, right after each event, the notices it causes: a notice for every payment it makes
    /// terminal, and one for each hold or lost finality. Journaled in the same commit.
    pub(crate) fn with_notifications(&self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let notices = self.notices_of(&event);
            let at = event.at();
            out.push(event);
            if !notices.is_empty() {
                let per = self.per_record(NOTICE_BYTES_MAX);
                out.extend(notices.chunks(per).map(|c| Event::Notifications { notices: c.to_vec(), at }));
            }
        }
        out
    }

    fn notices_of(&self, event: &Event) -> Vec<Notification> {
        let notice = |parts: &[&[u8]], payment: PaymentId, state: PaymentState| Notification {
            id: derived(parts),
            payment,
            state,
        };
        match event {
            Event::PaymentHeld { payment, at, .. } => {
                // A hold is news for the merchant too; it can happen more than once, so its
                // notice is told apart by when.
                let held = self.state.book.payments.get(payment).map(|r| r.state.is_in_flight());
                let state = PaymentState::Held { in_flight: held.unwrap_or(false) };
                vec![notice(&[b"notice-held", &payment.0.to_le_bytes(), &at.0.to_le_bytes()], *payment, state)]
            }
            Event::SettlementFinal { settlement, .. } => self.state.book.settlements[settlement]
                .settlement
                .legs
                .iter()
                .map(|l| terminal_notice(l.payment, PaymentState::Settled))
                .collect(),
            Event::PaymentFailed { payment, .. }
            | Event::PaymentResolved { payment, resolution: Resolution::Fail, .. } => {
                vec![terminal_notice(*payment, PaymentState::Failed)]
            }
            // A settled payment whose settlement a deep reorg undid, and its return: news each
            // time, told apart by when.
            Event::FinalityLost { payments, at, .. } => {
                let state = PaymentState::Held { in_flight: true };
                payments
                    .iter()
                    .map(|p| notice(&[b"notice-finality-lost", &p.0.to_le_bytes(), &at.0.to_le_bytes()], *p, state))
                    .collect()
            }
            Event::FinalityRestored { settlement, at } => self
                .state
                .lost
                .get(settlement)
                .map_or(&[][..], |l| &l.payments)
                .iter()
                .map(|p| {
                    let parts: [&[u8]; 3] = [b"notice-finality-restored", &p.0.to_le_bytes(), &at.0.to_le_bytes()];
                    notice(&parts, *p, PaymentState::Settled)
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Appends handed to the writer and not yet known durable.
#[derive(Default)]
pub(crate) struct InFlight {
    tickets: Vec<Ticket>,
    /// The journal's tip before the first of them.
    base: u64,
    records: u64,
    bytes: u64,
    /// The guard index keys they write.
    index: BTreeSet<Vec<u8>>,
    /// The merchant reference prefixes they take.
    references: std::collections::HashSet<Vec<u8>>,
    /// Why an append after them was refused (reported after their own failure, if any).
    refused: Option<journal::JournalError>,
    /// Their idempotency claims: (merchant, key) → (batch, body hash).
    claims: std::collections::HashMap<(String, String), (BatchId, [u8; 32])>,
}

/// The most one notice takes encoded (two u128 varints and a state), rounded up.
const NOTICE_BYTES_MAX: usize = 48;

/// The notice of a payment's terminal state: one per payment and state, ever.
fn terminal_notice(payment: PaymentId, state: PaymentState) -> Notification {
    let id = derived(&[b"notice", &payment.0.to_le_bytes(), state.as_str().as_bytes()]);
    Notification { id, payment, state }
}
