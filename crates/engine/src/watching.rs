//! Watching: every open settlement is observed (concurrently, each call under the rail
//! timeout), then the observations are judged one by one in settlement order — confirm,
//! finalize, bump, cancel, roll back, hold — so decisions stay deterministic.

use std::sync::Arc;

use model::*;
use rails::{Rail, Watch};
use router::{Action, Outcome, SettlementWatch};

use crate::{Effect, Engine, EngineError, Watching, timed};

impl Engine {
    pub(crate) async fn watch_all(&mut self, now: Timestamp) -> Result<(), EngineError> {
        let mut observe = Vec::new();
        let mut holds = Vec::new();
        for id in self.state.book.open_settlements().clone() {
            let record = &self.state.book.settlements[&id];
            if self.rail(record.settlement.rail).is_none() {
                continue; // held when the engine started without its rail (recovery)
            }
            if !self.drives(record.settlement.rail) {
                continue; // another node watches it
            }
            match record.state {
                SettlementState::Planned => {}
                // Signed before a crash or a failed broadcast: the same bytes go out again,
                // unless the node keeps refusing them (then an operator is needed: its nonce
                // blocks every later transaction of the rail) or they are held already.
                SettlementState::Signed => {
                    let book = &self.state.book;
                    let legs = &record.settlement.legs;
                    let all_held = legs.iter().all(|l| {
                        book.payments.get(&l.payment).is_none_or(|r| matches!(r.state, PaymentState::Held { .. }))
                    });
                    let info = self
                        .watching
                        .entry(id)
                        .or_insert_with(|| Watching { last_action_at: now, ..Watching::default() });
                    if all_held || info.held {
                        continue;
                    }
                    if info.refusals > self.config.anomaly.rebroadcasts_max {
                        info.held = true;
                        let reason = format!(
                            "the node refused this settlement's broadcast {} times ({}); it blocks every later transaction of the rail: fix the cause (fund the hot wallet's fee asset), then resume it",
                            info.refusals,
                            info.last_refusal.as_deref().unwrap_or("no reason given")
                        );
                        tracing::warn!(settlement = %id, %reason, "signed settlement held");
                        holds.extend(legs.iter().map(|l| Event::PaymentHeld {
                            payment: l.payment,
                            reason: reason.clone(),
                            at: now,
                        }));
                        continue;
                    }
                    let tx = record.txs.last().expect("signed settlements have a transaction").clone();
                    self.effects.push(Effect::Broadcast { settlement: id, tx, children: Vec::new() });
                }
                _ => observe.push(id),
            }
        }
        if !holds.is_empty() {
            self.stage(holds)?;
        }
        let timeout = self.config.rail_timeout;
        let mut requests = Vec::with_capacity(observe.len());
        for id in &observe {
            let seen_in_block = self
                .watching
                .entry(*id)
                .or_insert_with(|| Watching { last_action_at: now, ..Watching::default() })
                .seen_in_block;
            let record = &self.state.book.settlements[id];
            let (versions, children) = (record.txs.clone(), record.children.clone());
            requests.push((self.rail_of(*id), Watch { versions, seen_in_block, children }));
        }
        let calls = requests.iter().map(|(rail, watch)| timed(timeout, rail.observe(watch)));
        let observations = futures::future::join_all(calls).await;
        for (id, observation) in observe.into_iter().zip(observations) {
            let rail = self.rail_of(id);
            match observation {
                Ok(observation) => {
                    self.breakers.get_mut(&rail.capabilities().rail).expect("breaker").record(Outcome::Success, now);
                    self.judge(&rail, id, observation, now).await?;
                }
                Err(error) => {
                    tracing::warn!(rail = %rail.capabilities().rail, settlement = %id, %error, "observe failed");
                    self.breakers.get_mut(&rail.capabilities().rail).expect("breaker").record(Outcome::Failure, now);
                }
            }
        }
        Ok(())
    }

    async fn judge(
        &mut self,
        rail: &Arc<dyn Rail>,
        id: SettlementId,
        observation: Observation,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        // Read from the book where needed, not cloned: a record carries every leg (up to a
        // batch's size), and a settlement is judged every round it is watched.
        let state = |engine: &Engine| engine.state.book.settlements[&id].state;
        // The book says confirmed, the chain says in no block: a reorg took it out while no
        // one was looking (the engine was down, so the block it was seen in is not known).
        // The book learns it first, so that what follows (a bump) applies to an unconfirmed
        // settlement; the engine stopped on a refused bump before (issue 10, scenario 1).
        if matches!(state(self), SettlementState::Confirmed { .. })
            && matches!(observation, Observation::Pending | Observation::Dropped)
        {
            tracing::warn!(settlement = %id, ?observation, "confirmed settlement no longer in a block; watching again");
            self.stage(vec![Event::SettlementReorged { settlement: id, at: now }])?;
        }
        if let Observation::Confirmed { txid, block, depth, .. } = observation {
            let known = matches!(state(self), SettlementState::Confirmed { depth: d } if u64::from(d) == depth);
            if !known {
                let depth = u32::try_from(depth).unwrap_or(u32::MAX);
                self.stage(vec![Event::SettlementConfirmed { settlement: id, txid, depth, at: now }])?;
            }
            self.watching.get_mut(&id).expect("inserted by watch_all").seen_in_block = Some(block);
        }
        let info = self.watching[&id].clone();
        let record = &self.state.book.settlements[&id];
        let cancels = record.cancels.clone();
        let watch = SettlementWatch {
            observation,
            confirmations_final: u64::from(rail.capabilities().confirmations_final),
            last_action_at: info.last_action_at,
            // A child pulling a version in counts as a bump: the budget bounds both.
            bumps: u32::try_from(record.txs.len().saturating_sub(1 + cancels.len()) + record.children.len())
                .unwrap_or(u32::MAX),
            rebroadcasts: info.rebroadcasts,
            cancelling: !cancels.is_empty(),
            cancels,
            fee_above_cap: info.fee_above_cap,
        };
        let fee_observed = match &watch.observation {
            Observation::Confirmed { fee_paid, .. } | Observation::Reverted { fee_paid, .. } => *fee_paid,
            _ => Amount::ZERO,
        };
        let action = router::assess(&watch, &self.config.anomaly, now);
        self.act(rail, id, action, fee_observed, now).await
    }

    async fn act(
        &mut self,
        rail: &Arc<dyn Rail>,
        id: SettlementId,
        action: Action,
        fee_observed: Amount,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        // Most rounds a watched settlement only waits: no copy of its record for that.
        if action == Action::Wait {
            return Ok(());
        }
        let record = self.state.book.settlements[&id].clone();
        // The fee the chain charged the mined version (from its receipt; with its mined
        // child's), booked instead of the fee it offered; never more than it and its dearest
        // child offered (its children all spend its change: one at most is mined; a node
        // saying otherwise is wrong).
        let charged = |txid: [u8; 32]| {
            let own = record.txs.iter().find(|t| t.txid == txid).map_or(Amount::ZERO, |t| t.fee);
            let child = record.children_of(&txid).iter().map(|c| c.fee).max().unwrap_or(Amount::ZERO);
            let offered = own.checked_add(child).unwrap_or(own);
            if fee_observed > offered {
                tracing::warn!(settlement = %id, %fee_observed, %offered, "node reports a fee above the one offered; booking the offer");
            }
            fee_observed.min(offered)
        };
        match action {
            Action::Wait => {}
            Action::Rebroadcast => {
                let info = self.watching.get_mut(&id).expect("watched");
                info.rebroadcasts += 1;
                info.last_action_at = now;
                let tx = record.txs.last().expect("a transaction").clone();
                let children = record.children_of(&tx.txid);
                self.effects.push(Effect::Broadcast { settlement: id, tx, children });
            }
            Action::Bump | Action::Cancel => self.replace(rail, id, &record, action == Action::Cancel, now).await?,
            Action::Finalize { txid } => {
                let fee_paid = charged(txid);
                self.stage(vec![Event::SettlementFinal { settlement: id, txid, fee_paid, at: now }])?;
                self.watching.remove(&id);
            }
            Action::RollBack { proof } => {
                tracing::info!(settlement = %id, ?proof, "settlement provably dead; payments reissued");
                let how = match &proof {
                    DeathProof::RevertedFinal { .. } => "it reverted",
                    DeathProof::CancelFinal { .. } => "it was cancelled",
                    DeathProof::ConflictFinal { .. } => "another transaction took its nonce",
                };
                let fee_burnt = match proof {
                    DeathProof::RevertedFinal { txid } | DeathProof::CancelFinal { txid } => charged(txid),
                    DeathProof::ConflictFinal { .. } => Amount::ZERO,
                };
                let mut events = vec![Event::SettlementDead { settlement: id, proof, fee_burnt, at: now }];
                // Provably dead: every payment of the attempt is reissued, unless it has had
                // its attempts: then it is held for the operator, with why.
                let attempts_max = self.config.anomaly.attempts_max;
                let mut queued = Vec::new();
                for leg in &record.settlement.legs {
                    let attempt = self.state.book.payments.get(&leg.payment).map_or(0, |r| r.attempt);
                    if attempt >= attempts_max {
                        let reason = format!(
                            "attempt {attempt} of {attempts_max} died too ({how}); find out why (a reverting payout, a wrong contract), then retry or fail it"
                        );
                        events.push(Event::PaymentHeld { payment: leg.payment, reason, at: now });
                    } else {
                        events.push(Event::PaymentReissued { payment: leg.payment, previous: id, at: now });
                        queued.push(leg.payment);
                    }
                }
                if !queued.is_empty() {
                    events.push(Event::PaymentsQueued { payments: queued, at: now });
                }
                self.stage(events)?;
                self.watching.remove(&id);
            }
            Action::WatchAgain => {
                self.watching.get_mut(&id).expect("watched").seen_in_block = None;
                if matches!(record.state, SettlementState::Confirmed { .. }) {
                    tracing::warn!(settlement = %id, "confirmed settlement reorged out; watching again");
                    self.stage(vec![Event::SettlementReorged { settlement: id, at: now }])?;
                }
            }
            Action::Hold { reason } => {
                let info = self.watching.get_mut(&id).expect("watched");
                if !info.held {
                    info.held = true;
                    tracing::warn!(settlement = %id, %reason, "settlement held for an operator");
                    self.hold_legs(&record, &reason, now)?;
                }
            }
        }
        Ok(())
    }

    /// A fee bump or a cancel: a new version spending the same nonce or inputs, staged before
    /// it is broadcast. A rail that cannot quote or build now is tried again next round.
    async fn replace(
        &mut self,
        rail: &Arc<dyn Rail>,
        id: SettlementId,
        record: &SettlementRecord,
        cancel: bool,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let previous = record.txs.last().expect("a transaction").clone();
        let payments: Vec<PaymentId> = record.settlement.legs.iter().map(|l| l.payment).collect();
        let batch = self.batch_of(record.settlement.asset, &payments, now);
        let timeout = self.config.rail_timeout;
        let quoted = timed(timeout, rail.quote(&batch)).await;
        // What the rail quotes now is the anomaly rules' input: above the cap, a stuck
        // settlement is held for the operator instead of bumped again and again.
        let fee_above_cap = matches!(quoted, Err(rails::RailError::FeeAboveCap { .. }));
        self.watching.get_mut(&id).expect("watched").fee_above_cap = fee_above_cap;
        let reserved = record.settlement.fee_reserved;
        let mut accelerated = false;
        let built = match quoted {
            Ok(quote) if cancel => timed(timeout, rail.cancel(&previous, &quote)).await,
            Ok(quote) => match timed(timeout, rail.bump(&batch, &previous, &quote)).await {
                // Others spend its outputs: a child pays for it instead, when the rail can.
                Err(rails::RailError::NotReplaceable(why)) => {
                    tracing::info!(settlement = %id, %why, "not replaceable; accelerating with a child");
                    accelerated = true;
                    let children = record.children_of(&previous.txid);
                    timed(timeout, rail.accelerate(&previous, &children, &quote)).await
                }
                other => other,
            },
            Err(error) => Err(error),
        };
        // A version dearer than the fee reserved would pay more than the ledger can book:
        // it is not signed into the journal, and the settlement is held when stuck again. A
        // child's fee adds to its parent's; children of one version all spend its change, so
        // at most one of them is mined.
        let spent = if accelerated { previous.fee } else { Amount::ZERO };
        let built = built.and_then(|tx| match tx.fee.checked_add(spent) {
            Some(total) if total <= reserved => Ok(tx),
            total => Err(rails::RailError::FeeAboveCap { fee: total.unwrap_or(Amount::MAX), cap: reserved }),
        });
        let tx = match built {
            Ok(tx) => tx,
            Err(error) => {
                // Tried again once it has been stuck a while longer; past the bump budget
                // it is held with the rail's answer (retrying every round for ever left it
                // without a reason, found by the simulator).
                let budget = self.config.anomaly.bump_budget;
                let info = self.watching.get_mut(&id).expect("watched");
                info.fee_above_cap |= matches!(error, rails::RailError::FeeAboveCap { .. });
                info.replace_failures += 1;
                info.last_action_at = now;
                tracing::warn!(rail = %record.settlement.rail, settlement = %id, cancel, %error, "replacement not built");
                if info.replace_failures > budget && !info.held {
                    info.held = true;
                    let reason = format!("stuck, and the rail cannot replace it: {error}");
                    self.hold_legs(record, &reason, now)?;
                }
                return Ok(());
            }
        };
        self.watching.get_mut(&id).expect("watched").replace_failures = 0;
        let event = if accelerated {
            Event::SettlementAccelerated { settlement: id, child: tx.clone(), at: now }
        } else if cancel {
            Event::SettlementCancelling { settlement: id, tx: tx.clone(), at: now }
        } else {
            Event::SettlementReplaced { settlement: id, tx: tx.clone(), at: now }
        };
        self.stage(vec![event])?;
        self.watching.get_mut(&id).expect("watched").last_action_at = now;
        // A child goes out after its parent again (harmless when the node has it).
        let (tx, children) = if accelerated { (previous, vec![tx]) } else { (tx, Vec::new()) };
        self.effects.push(Effect::Broadcast { settlement: id, tx, children });
        Ok(())
    }

    /// Holds a settlement's payments for the operator, with `reason`; payments already held
    /// (by a hold before a restart, say) stay as they are.
    fn hold_legs(&mut self, record: &SettlementRecord, reason: &str, now: Timestamp) -> Result<(), EngineError> {
        let book = &self.state.book;
        let events: Vec<Event> = record
            .settlement
            .legs
            .iter()
            .filter(|l| !book.payments.get(&l.payment).is_some_and(|r| matches!(r.state, PaymentState::Held { .. })))
            .map(|l| Event::PaymentHeld { payment: l.payment, reason: reason.to_owned(), at: now })
            .collect();
        if events.is_empty() { Ok(()) } else { self.stage(events) }
    }
}
