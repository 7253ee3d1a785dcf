//! Mis-transfer guards in the engine: judged at intake (`guard_intake`) and again just before
//! a settlement is planned (`guard_before_signing`); released by themselves when their time
//! lock, approvals and test payout are done (`release_guards`, at most once a second), or by a
//! treasury key (`release_guard`, `reject_guard`, `approve`). The rules are `model::guard`'s
//! (pure); this module reads what the history store knows of the destinations and journals
//! the outcome.
//!
//! History index (written with the commit that settles a payout, for merchants with guards):
//! `g` merchant, fingerprint, address key → nothing. A prefix read on (merchant, fingerprint)
//! answers both "paid before" (this exact key) and "looks like one paid before" (another key).

use std::collections::BTreeMap;

use journal::HistoryOp;
use model::guard::{self, Known, Verdict};
use model::*;

use crate::{Engine, EngineError};

pub(crate) const GUARD_INDEX: u8 = b'g';

fn index_prefix(merchant: MerchantId, destination: &Address) -> Vec<u8> {
    let mut key = vec![GUARD_INDEX];
    key.extend_from_slice(&merchant.0.to_be_bytes());
    key.extend_from_slice(guard::fingerprint(destination).as_bytes());
    key.push(b'/');
    key
}

/// The index entries of payouts that just settled, for merchants with guards.
pub(crate) fn index_ops(retired: &Retired, policies: &BTreeMap<MerchantId, GuardPolicy>) -> Vec<HistoryOp> {
    retired
        .payments
        .iter()
        .filter(|r| r.state == PaymentState::Settled && policies.contains_key(&r.payment.merchant))
        .map(|r| {
            let mut key = index_prefix(r.payment.merchant, &r.payment.destination);
            key.extend_from_slice(guard::address_key(&r.payment.destination).as_bytes());
            HistoryOp::Put { key, value: Vec::new() }
        })
        .collect()
}

/// What the guards decided for a batch at intake: rows refused (row, message) and holds.
pub(crate) type IntakeGuards = (Vec<(usize, String)>, Vec<(PaymentId, GuardHold)>);

/// Why a staff member's guard action is refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum GuardActionError {
    #[error("payment {0} is not held by guards")]
    NotGuarded(PaymentId),
    #[error("only a treasury (or admin) key may {0} a payout held by guards")]
    Role(&'static str),
    #[error(
        "payment {payment} still waits for {waits}; those release it by themselves (a rejection is always possible)"
    )]
    Automatic { payment: PaymentId, waits: String },
    #[error("unknown merchant {0}: it has no API key")]
    UnknownMerchant(MerchantId),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn staff(role: Role, action: &'static str) -> Result<(), GuardActionError> {
    match role {
        Role::Treasury | Role::Admin => Ok(()),
        Role::Merchant | Role::Operator => Err(GuardActionError::Role(action)),
    }
}

impl Engine {
    /// What the history store and the open state know of each payment's destination (only
    /// for merchants with guards: the others need no read).
    fn known(&self, payments: &[&Payment]) -> Result<Vec<Known>, EngineError> {
        let policies = &self.state.guards.policies;
        let guarded: Vec<usize> =
            (0..payments.len()).filter(|i| policies.contains_key(&payments[*i].merchant)).collect();
        let mut known = vec![Known::default(); payments.len()];
        if guarded.is_empty() {
            return Ok(known);
        }
        let prefixes: Vec<Vec<u8>> =
            guarded.iter().map(|i| index_prefix(payments[*i].merchant, &payments[*i].destination)).collect();
        let found = self.journal.history_keys_many(&prefixes, 16)?;
        for ((i, prefix), mut keys) in guarded.iter().zip(&prefixes).zip(found) {
            // What the writer has not made durable yet counts too (see `gate`).
            keys.extend(self.index_in_flight(prefix).cloned());
            keys.sort_unstable();
            keys.dedup();
            keys.truncate(16);
            let payment = payments[*i];
            let own = guard::address_key(&payment.destination);
            for key in keys {
                let address = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                if address == own {
                    known[*i].paid_before = true;
                } else if known[*i].look_alike.is_none() {
                    known[*i].look_alike = Some(address);
                }
            }
            known[*i].test_pending = self.open_test(payment.merchant, &payment.destination);
        }
        Ok(known)
    }

    /// An open test payout from this merchant to this destination.
    fn open_test(&self, merchant: MerchantId, destination: &Address) -> Option<PaymentId> {
        let book = &self.state.book;
        self.state.guards.tests.iter().find_map(|(test, done)| {
            let record = book.payments.get(test)?;
            (done.is_none() && record.payment.merchant == merchant && record.payment.destination == *destination)
                .then_some(*test)
        })
    }

    /// Judges a validated batch: rows refused by an `Only` allowlist (field and message),
    /// the holds to journal, and the test payouts to split off (added to `payments`, with the
    /// rest of each split payout lowered by the test's amount).
    pub(crate) fn guard_intake(
        &self,
        payments: &mut Vec<Payment>,
        now: Timestamp,
    ) -> Result<IntakeGuards, EngineError> {
        let known = self.known(&payments.iter().collect::<Vec<_>>())?;
        let mut refused = Vec::new();
        let mut holds = Vec::new();
        let mut tests = Vec::new();
        // Two rows of one batch to one new destination share one test payout.
        let mut split_to: BTreeMap<(MerchantId, Address), PaymentId> = BTreeMap::new();
        for (row, (payment, known)) in payments.iter_mut().zip(known).enumerate() {
            let mut known = known;
            if known.test_pending.is_none() {
                known.test_pending = split_to.get(&(payment.merchant, payment.destination.clone())).copied();
            }
            let policy = self.state.guards.policies.get(&payment.merchant);
            match guard::check(policy, payment, &known, 0, now, true) {
                Verdict::Pass => {}
                Verdict::Refuse(message) => refused.push((row, message)),
                Verdict::Hold { mut hold, split } => {
                    if let Some(amount) = split {
                        let test = split_test(payment, amount);
                        hold.test = Some(test.id);
                        split_to.insert((payment.merchant, payment.destination.clone()), test.id);
                        tests.push(test);
                    }
                    holds.push((payment.id, hold));
                }
            }
        }
        payments.extend(tests);
        Ok((refused, holds))
    }

    /// Judges payments about to be planned by their merchants' guards as they are now (a
    /// guard set after intake applies). Those a guard stops are held (and leave planning);
    /// the rest are returned.
    pub(crate) fn guard_before_signing(
        &mut self,
        ids: Vec<PaymentId>,
        now: Timestamp,
    ) -> Result<Vec<PaymentId>, EngineError> {
        let policies = &self.state.guards.policies;
        if policies.is_empty() {
            return Ok(ids);
        }
        let book = &self.state.book;
        let guarded: Vec<&Payment> =
            ids.iter().map(|id| &book.payments[id].payment).filter(|p| policies.contains_key(&p.merchant)).collect();
        if guarded.is_empty() {
            return Ok(ids);
        }
        let known = self.known(&guarded)?;
        let mut events = Vec::new();
        let mut stopped = std::collections::BTreeSet::new();
        for (payment, known) in guarded.iter().zip(known) {
            let cleared = self.state.guards.cleared.get(&payment.id).copied().unwrap_or(0);
            let policy = self.state.guards.policies.get(&payment.merchant);
            if let Verdict::Hold { hold, .. } = guard::check(policy, payment, &known, cleared, now, false) {
                tracing::warn!(payment = %payment.id, reason = %hold.describe(), "guards held a payout before signing");
                stopped.insert(payment.id);
                events.extend(hold_events(payment.id, hold, "before signing", now));
            }
        }
        if events.is_empty() {
            return Ok(ids);
        }
        self.stage(events)?;
        Ok(ids.into_iter().filter(|id| !stopped.contains(id)).collect())
    }

    /// Releases guard holds whose automatic conditions are done, and turns a hold whose test
    /// payout failed into one treasury decides. At most once a second.
    pub(crate) fn release_guards(&mut self, now: Timestamp) -> Result<(), EngineError> {
        if self.state.guards.held.is_empty() || now.saturating_since(self.guards_checked_at) < 1_000 {
            return Ok(());
        }
        self.guards_checked_at = now;
        let guards = &self.state.guards;
        let mut events = Vec::new();
        for (payment, hold) in &guards.held {
            let test = hold.test.and_then(|t| guards.tests.get(&t).copied().flatten());
            if test == Some(false) {
                let failed = hold.test.expect("a test");
                let mut hold = hold.clone();
                hold.test = None;
                hold.reasons.retain(|(kind, _)| *kind != GuardKind::AwaitingTest);
                hold.reasons.push((
                    GuardKind::NewDestination,
                    format!("its test payout {failed} failed: treasury releases or rejects it"),
                ));
                events.push(Event::PaymentGuarded {
                    payment: *payment,
                    hold,
                    by: "railyard".into(),
                    reason: "test payout failed".into(),
                    at: now,
                });
            } else if !hold.needs_release() && hold.conditions_met(now, test == Some(true)) {
                events.push(Event::PaymentResolved {
                    payment: *payment,
                    resolution: Resolution::Retry,
                    operator: "railyard".into(),
                    reason: "guards released it: time lock, approvals and test payout done".into(),
                    at: now,
                });
            }
        }
        if !events.is_empty() {
            tracing::info!(changed = events.len(), "guard holds released or updated");
            self.stage(events)?;
        }
        Ok(())
    }

    /// Treasury sets a merchant's guards (`None` removes them). Journaled with who and why.
    pub async fn set_guards(
        &mut self,
        merchant: MerchantId,
        policy: Option<GuardPolicy>,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), GuardActionError> {
        self.running()?;
        if !self.state.access.keys.values().any(|k| k.merchant == Some(merchant)) {
            return Err(GuardActionError::UnknownMerchant(merchant));
        }
        if let Some(policy) = &policy {
            policy.validate().map_err(|e| GuardActionError::Invalid(e.to_string()))?;
        }
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.stage_input(Event::GuardsSet { merchant, policy, by, reason, at: now })?;
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// A treasury key approves a large payout held by guards (each key once).
    pub async fn approve(
        &mut self,
        payment: PaymentId,
        by: &str,
        role: Role,
        now: Timestamp,
    ) -> Result<(), GuardActionError> {
        self.running()?;
        staff(role, "approve")?;
        if !self.state.guards.held.contains_key(&payment) {
            return Err(GuardActionError::NotGuarded(payment));
        }
        self.stage_input(Event::PaymentApproved { payment, by: by.to_owned(), at: now })
            .map_err(|e| GuardActionError::Invalid(e.to_string()))?;
        self.guards_checked_at = Timestamp(0);
        self.release_guards(now)?;
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// A treasury key releases the reasons of a guard hold that need a person. When automatic
    /// ones remain (time lock, approvals, test payout) the hold stays with those; a release
    /// with only automatic ones left is refused: they release it by themselves.
    pub async fn release_guard(
        &mut self,
        payment: PaymentId,
        by: &str,
        role: Role,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), GuardActionError> {
        self.running()?;
        staff(role, "release")?;
        let hold = self.state.guards.held.get(&payment).ok_or(GuardActionError::NotGuarded(payment))?.clone();
        if !hold.needs_release() {
            return Err(GuardActionError::Automatic { payment, waits: hold.release_by() });
        }
        let mut rest = hold.clone();
        rest.reasons.retain(|(kind, _)| kind.automatic());
        let (by, reason) = (by.to_owned(), reason.to_owned());
        let event = if rest.reasons.is_empty() {
            Event::PaymentResolved { payment, resolution: Resolution::Retry, operator: by, reason, at: now }
        } else {
            Event::PaymentGuarded { payment, hold: rest, by, reason, at: now }
        };
        self.stage_input(event)?;
        self.guards_checked_at = Timestamp(0);
        self.release_guards(now)?;
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// A treasury key rejects a payout held by guards: it fails, and the merchant is told.
    pub async fn reject_guard(
        &mut self,
        payment: PaymentId,
        by: &str,
        role: Role,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), GuardActionError> {
        self.running()?;
        staff(role, "reject")?;
        if !self.state.guards.held.contains_key(&payment) {
            return Err(GuardActionError::NotGuarded(payment));
        }
        let (operator, reason) = (by.to_owned(), reason.to_owned());
        self.stage(vec![Event::PaymentResolved { payment, resolution: Resolution::Fail, operator, reason, at: now }])?;
        self.commit_and_act(now).await?;
        Ok(())
    }
}

/// The events that hold a payment by guards: the book's hold (with the merchant told) and the
/// guard's record of why and what releases it.
pub(crate) fn hold_events(payment: PaymentId, hold: GuardHold, when: &str, now: Timestamp) -> [Event; 2] {
    [
        Event::PaymentHeld { payment, reason: hold.describe(), at: now },
        Event::PaymentGuarded { payment, hold, by: "railyard".into(), reason: format!("guards at {when}"), at: now },
    ]
}

/// The test payout split off a payout to a new destination: same merchant, batch, destination
/// and networks, the test's amount; the payout keeps the rest. Its id is the payout's with the
/// row's top bit set (rows stay below 2^31).
fn split_test(payment: &mut Payment, amount: Amount) -> Payment {
    let mut test = payment.clone();
    test.id = PaymentId(payment.id.0 | 1 << 31);
    test.amount = amount;
    test.metadata = BTreeMap::from([("railyard.test_for".to_owned(), payment.id.to_string())]);
    payment.amount = payment.amount.checked_sub(amount).expect("a test is below the payout (policy validation)");
    payment.metadata.insert("railyard.test_payout".to_owned(), test.id.to_string());
    payment.metadata.insert("railyard.test_amount".to_owned(), amount.to_string());
    test
}
