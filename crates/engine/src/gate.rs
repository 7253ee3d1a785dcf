//! The record gate: how the engine's decisions become durable before anything acts on them.
//! `stage` applies an event to the state and queues it (with the history writes of what it
//! finished and, when a read model is attached, what it touched); `commit` appends everything
//! staged as one journal append; `commit_and_act` then runs the effects. A refusal of an event
//! the engine built, or a failed commit, stops the engine for good (`stop`); a refusal of a
//! caller's input (`stage_input`) is the caller's error and changes nothing.

use journal::{Append, Appended, Claim};
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
            Event::PaymentQueued { payment, .. }
            | Event::PaymentResolved { payment, resolution: Resolution::Retry, .. } => vec![*payment],
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
            Event::PaymentQueued { payment, .. }
            | Event::PaymentHeld { payment, .. }
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
        let retired = self.state.book.take_retired();
        if !retired.is_empty() {
            self.history.extend(history::ops(&retired, self.config.reconcile_balances));
            self.history.extend(crate::guards::index_ops(&retired, &self.state.guards.policies));
            self.unwatch(&retired);
        }
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

    /// Appends everything staged in one durable commit. A failure stops the engine: the state
    /// holds events the journal may not, so nothing may act on it.
    pub(crate) async fn commit(&mut self) -> Result<(), EngineError> {
        self.commit_claimed(None).await.map(|_| ())
    }

    pub(crate) async fn commit_claimed(&mut self, claim: Option<Claim>) -> Result<Option<Appended>, EngineError> {
        self.running()?;
        if self.staged.is_empty() {
            return Ok(None);
        }
        let payloads: Vec<Vec<u8>> = self.staged.iter().map(Event::encode).collect();
        let history = std::mem::take(&mut self.history);
        let started = std::time::Instant::now();
        let outcome = match self.journal.submit_append(Append { payloads, claim, history }) {
            Ok(ticket) => ticket.await,
            Err(error) => Err(error),
        };
        self.commit_wait += started.elapsed();
        match outcome {
            Ok(appended) => {
                self.staged.clear();
                self.commits += 1;
                self.committed_own();
                self.maybe_snapshot().await?;
                Ok(Some(appended))
            }
            Err(error) => Err(self.stop(format!("journal commit failed: {error}"))),
        }
    }

    /// Right after a commit the state is exactly the journal's: a snapshot taken now lets a
    /// restart skip everything before it. A snapshot that cannot be written is not fatal (the
    /// journal is whole); it is logged and tried again after the next commit.
    pub(crate) async fn maybe_snapshot(&mut self) -> Result<(), EngineError> {
        let every = self.config.snapshot_every_records;
        let tip = self.journal.tip();
        if self.standby.is_some() {
            // The acting node writes the snapshots of a shared journal.
            return Ok(());
        }
        if every == 0 || tip < self.last_snapshot_seq.saturating_add(every) {
            return Ok(());
        }
        let state = crate::state::encode_snapshot(&self.state);
        match self.journal.write_snapshot_async(tip, state).await {
            Ok(()) => {
                tracing::info!(seq = tip, "snapshot written");
                self.last_snapshot_seq = tip;
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

    /// Adds a notification for every payment these events make terminal, to be journaled in
    /// the same commit.
    pub(crate) fn with_notifications(&self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            if let Event::PaymentHeld { payment, at, .. } = &event {
                // A hold is news for the merchant too; it can happen more than once, so its
                // notice is told apart by when.
                let held = self.state.book.payments.get(payment).map(|r| r.state.is_in_flight());
                let state = PaymentState::Held { in_flight: held.unwrap_or(false) };
                let id = derived(&[b"notice-held", &payment.0.to_le_bytes(), &at.0.to_le_bytes()]);
                let (payment, at) = (*payment, *at);
                out.push(event);
                out.push(Event::Notification { id, payment, state, at });
                continue;
            }
            let terminal: Vec<(PaymentId, PaymentState)> = match &event {
                Event::SettlementFinal { settlement, .. } => self.state.book.settlements[settlement]
                    .settlement
                    .legs
                    .iter()
                    .map(|l| (l.payment, PaymentState::Settled))
                    .collect(),
                Event::PaymentFailed { payment, .. }
                | Event::PaymentResolved { payment, resolution: Resolution::Fail, .. } => {
                    vec![(*payment, PaymentState::Failed)]
                }
                // A settled payment whose settlement a deep reorg undid, and its return: news
                // each time, told apart by when.
                Event::FinalityLost { payments, at, .. } => {
                    let state = PaymentState::Held { in_flight: true };
                    for payment in payments {
                        let id = derived(&[b"notice-finality-lost", &payment.0.to_le_bytes(), &at.0.to_le_bytes()]);
                        out.push(Event::Notification { id, payment: *payment, state, at: *at });
                    }
                    Vec::new()
                }
                Event::FinalityRestored { settlement, at } => {
                    for payment in self.state.lost.get(settlement).map_or(&[][..], |l| &l.payments) {
                        let id = derived(&[b"notice-finality-restored", &payment.0.to_le_bytes(), &at.0.to_le_bytes()]);
                        out.push(Event::Notification { id, payment: *payment, state: PaymentState::Settled, at: *at });
                    }
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let at = event.at();
            out.push(event);
            for (payment, state) in terminal {
                let id = derived(&[b"notice", &payment.0.to_le_bytes(), state.to_string().as_bytes()]);
                out.push(Event::Notification { id, payment, state, at });
            }
        }
        out
    }
}
