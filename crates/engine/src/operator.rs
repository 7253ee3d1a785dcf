//! Operator and treasury controls: pause and resume a rail, drain its queue (with a dry run
//! that reports exactly what a real drain moves), resolve held payments, fund pools. Each is
//! journaled with who and why; a refused command changes nothing.

use model::*;

use crate::routing::rail_states;
use crate::{Effect, Engine, EngineError, Watching};

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no rail named {0}")]
    UnknownRail(RailId),
    #[error("rail {0} is already paused")]
    AlreadyPaused(RailId),
    #[error("rail {0} is not paused")]
    NotPaused(RailId),
    #[error("no payment {0}")]
    UnknownPayment(PaymentId),
    #[error(
        "payment {payment} is {state}: {resolution:?} does not apply (retry and fail are for held payments not in flight, resume for held payments in flight)"
    )]
    CannotResolve { payment: PaymentId, state: PaymentState, resolution: Resolution },
    #[error(
        "payment {0} is held by guards: a treasury key releases or rejects it (POST /v1/payments/{{id}}/release or /reject)"
    )]
    Guarded(PaymentId),
    #[error("payment {payment} is {state}: only a queued payment can be cancelled")]
    NotCancellable { payment: PaymentId, state: PaymentState },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Engine {
    fn known_rail(&self, rail: RailId) -> Result<(), OperatorError> {
        self.running()?;
        self.rail(rail).map(|_| ()).ok_or(OperatorError::UnknownRail(rail))
    }

    /// Stops new planning on `rail`; what is in flight there stays watched. Journaled with who
    /// and why.
    pub async fn pause(
        &mut self,
        rail: RailId,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.set_paused(rail, true, operator, reason, now).await
    }

    pub async fn resume_rail(
        &mut self,
        rail: RailId,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.set_paused(rail, false, operator, reason, now).await
    }

    async fn set_paused(
        &mut self,
        rail: RailId,
        pause: bool,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.known_rail(rail)?;
        let (operator, reason) = (operator.to_owned(), reason.to_owned());
        let event = match (pause, self.state.paused.contains(&rail)) {
            (true, true) => return Err(OperatorError::AlreadyPaused(rail)),
            (false, false) => return Err(OperatorError::NotPaused(rail)),
            (true, false) => Event::RailPaused { rail, operator, reason, at: now },
            (false, true) => Event::RailResumed { rail, operator, reason, at: now },
        };
        tracing::info!(rail = %rail, pause, "operator changed a rail");
        self.stage_input(event)?;
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// Moves `rail`'s queued payments to the rails the router picks with `rail` out. A dry run
    /// reports the same moves and changes nothing; a real drain is journaled with who and why.
    /// Payments in flight are never moved.
    pub async fn drain(
        &mut self,
        rail: RailId,
        dry_run: bool,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<queue::DrainReport, OperatorError> {
        self.known_rail(rail)?;
        let mut paused = self.state.paused.clone();
        paused.insert(rail);
        let states = rail_states(&self.rails, &self.breakers, &paused, &self.quotes, now);
        let (router, state) = (&self.router, &self.state);
        let report = self.staging.drain(rail, dry_run, now, |item| {
            let payment = &state.book.payments[&item.id].payment;
            let urgent = state.is_urgent(payment.class);
            router.decide(payment, item.deadline, &states, &|r, a| state.pools.spendable(r, a, urgent), now).chosen
        });
        if !dry_run && !report.moves.is_empty() {
            let moved = u32::try_from(report.moves.len()).unwrap_or(u32::MAX);
            tracing::info!(rail = %rail, moved, operator, "operator drained a rail");
            let (operator, reason) = (operator.into(), reason.into());
            self.stage_input(Event::RailDrained { rail, moved, operator, reason, at: now })?;
            self.commit_and_act(now).await?;
        }
        Ok(report)
    }

    /// Resolves a held payment: retry or fail it if nothing of it is in flight, resume
    /// watching it if it is. The state machine refuses anything else.
    pub async fn resolve(
        &mut self,
        payment: PaymentId,
        resolution: Resolution,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.running()?;
        let state = self.state.book.payment(payment).map_err(|_| OperatorError::UnknownPayment(payment))?.state;
        if self.state.guards.held.contains_key(&payment) {
            return Err(OperatorError::Guarded(payment));
        }
        let legal = matches!(
            (state, resolution),
            (PaymentState::Held { in_flight: false }, Resolution::Retry | Resolution::Fail)
                | (PaymentState::Held { in_flight: true }, Resolution::Resume)
        );
        if !legal {
            return Err(OperatorError::CannotResolve { payment, state, resolution });
        }
        // Its settlement can be watched again only on a configured rail.
        if resolution == Resolution::Resume
            && let Some(settlement) = self.state.book.payments[&payment].settlement
            && let Some(record) = self.state.book.settlements.get(&settlement)
            && self.rail(record.settlement.rail).is_none()
        {
            return Err(OperatorError::UnknownRail(record.settlement.rail));
        }
        let (operator, reason) = (operator.to_owned(), reason.to_owned());
        // A held settlement is one transaction: resuming any of its payments resumes every
        // payment of it still held (resuming one leg alone left the others held, and the
        // next hold of the settlement then held a held payment again: the engine stopped).
        let mut resumed = vec![payment];
        if resolution == Resolution::Resume
            && let Some(settlement) = self.state.book.payments[&payment].settlement
            && let Some(record) = self.state.book.settlements.get(&settlement)
        {
            let book = &self.state.book;
            resumed.extend(record.settlement.legs.iter().map(|l| l.payment).filter(|p| {
                *p != payment && book.payments.get(p).is_some_and(|r| r.state == PaymentState::Held { in_flight: true })
            }));
        }
        let events = resumed
            .into_iter()
            .map(|payment| Event::PaymentResolved {
                payment,
                resolution,
                operator: operator.clone(),
                reason: reason.clone(),
                at: now,
            })
            .collect();
        self.stage(events)?;
        if resolution == Resolution::Resume
            && let Some(settlement) = self.state.book.payments[&payment].settlement
        {
            // Watch it afresh: counters reset, its bytes go out again after the commit.
            self.watching.insert(settlement, Watching { last_action_at: now, ..Watching::default() });
            let record = &self.state.book.settlements[&settlement];
            if let Some(tx) = record.txs.last().cloned() {
                let children = record.children_of(&tx.txid);
                self.effects.push(Effect::Broadcast { settlement, tx, children });
            }
        }
        self.commit_and_act(now).await?;
        Ok(())
    }

    /// Marks outbox notifications delivered (the receiver acknowledged them): they leave the
    /// outbox. Unknown or already delivered ids are ignored, so a retried acknowledgement is
    /// harmless.
    pub async fn acknowledge(&mut self, ids: &[u128], now: Timestamp) -> Result<(), EngineError> {
        self.running()?;
        let mut delivered: Vec<u128> = ids.iter().copied().filter(|id| self.state.outbox.contains_key(id)).collect();
        delivered.sort_unstable();
        delivered.dedup();
        if !delivered.is_empty() {
            self.stage_input(Event::NotificationsDelivered { ids: delivered, at: now })?;
        }
        self.commit_and_act(now).await
    }

    /// Moves liquidity from the treasury into a rail's pool (journaled). A zero amount, a pool
    /// that is not configured, or a transfer id reused with other details is refused and
    /// changes nothing; the same transfer again is a no-op.
    pub async fn fund_pool(
        &mut self,
        rail: RailId,
        asset: Asset,
        amount: Amount,
        transfer: u128,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        if amount.is_zero() {
            return Err(EngineError::Refused("amount: a pool is funded with more than zero".into()));
        }
        if self.rail(rail).is_none() || !self.state.pools.has_pool(rail, asset) {
            return Err(EngineError::Refused(format!("no pool of {asset} on rail {rail} is configured")));
        }
        self.stage_input(Event::PoolFunded { rail, asset, amount, transfer, at: now })?;
        self.commit_and_act(now).await
    }
}
