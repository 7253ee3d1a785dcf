//! The operators and the treasury in a simulated run: rail controls and resolutions during
//! the schedule, and after it the checks that every payment settles, fails or is held, then
//! (pools funded, holds resolved) that every payment settles.

use engine::{EngineError, OperatorError};
use model::*;
use rails::sandbox::Fault;

use crate::{Invariant, Sim, Violation};

impl Sim {
    pub(crate) async fn operate_rail(&mut self) -> Result<(), Violation> {
        let chain = self.rng.usize(0..self.world.chains.len());
        let rail = self.world.chains[chain].id;
        let now = self.now;
        let paused = self.engine().state().paused.contains(&rail);
        let result = match self.rng.u8(0..3) {
            0 if paused => self.engine().resume_rail(rail, "sim", "resume", now).await.map(|()| "resumed".to_owned()),
            0 => self.engine().pause(rail, "sim", "pause", now).await.map(|()| "paused".to_owned()),
            1 => self
                .engine()
                .drain(rail, true, "sim", "dry run", now)
                .await
                .map(|r| format!("dry-run drain: {}", r.moves.len())),
            _ => self
                .engine()
                .drain(rail, false, "sim", "drain", now)
                .await
                .map(|r| format!("drained {}", r.moves.len())),
        };
        self.operator_result(rail.to_string(), result).await
    }

    pub(crate) async fn resolve_one(&mut self) -> Result<(), Violation> {
        let held = self.held();
        if held.is_empty() {
            return Ok(());
        }
        let (payment, in_flight) = held[self.rng.usize(0..held.len())];
        let resolution = match (in_flight, self.rng.u8(0..4)) {
            (true, _) => Resolution::Resume,
            (false, 0) => Resolution::Fail,
            (false, _) => Resolution::Retry,
        };
        let now = self.now;
        let result = self.engine().resolve(payment, resolution, "sim", "operator", now).await;
        self.operator_result(format!("payment {payment} {resolution:?}"), result.map(|()| "resolved".to_owned())).await
    }

    /// An operator's command is answered; a refusal is fine, a stop is judged like any stop.
    pub(crate) async fn operator_result(
        &mut self,
        what: String,
        result: Result<String, OperatorError>,
    ) -> Result<(), Violation> {
        match result {
            Ok(done) => {
                self.note(format!("operator: {what} {done}"));
                Ok(())
            }
            Err(OperatorError::Engine(EngineError::Stopped(reason))) => self.stopped(reason).await,
            Err(OperatorError::Engine(error)) => Err(self.violation(Invariant::EngineRuns, error.to_string())),
            Err(refused) => {
                self.note(format!("operator: {what} refused: {refused}"));
                Ok(())
            }
        }
    }

    pub(crate) async fn lift_faults(&mut self) -> Result<(), Violation> {
        for chain in &self.world.chains {
            chain.rail.inject(Fault::Restore);
        }
        if self.journal_failure_armed {
            self.engine().journal().fail_after(u64::MAX);
            self.journal_failure_armed = false;
        }
        if let Some(chain) = self.removed.take() {
            self.note(format!("rail {} back in the configuration; restarted", self.world.chains[chain].id));
            self.engine = None;
            self.crashes += 1;
            self.open().await?;
            self.check_acknowledged()?;
        }
        let paused: Vec<RailId> = self.engine().state().paused.iter().copied().collect();
        let now = self.now;
        for rail in paused {
            let result = self.engine().resume_rail(rail, "sim", "faults lifted", now).await;
            self.operator_result(rail.to_string(), result.map(|()| "resumed".to_owned())).await?;
        }
        self.note("every fault lifted, every rail resumed".into());
        Ok(())
    }

    pub(crate) fn all_done(&mut self) -> Result<bool, Violation> {
        let book = &self.engine().state().book;
        Ok(book.payments.values().all(|r| r.state.is_terminal() || matches!(r.state, PaymentState::Held { .. })))
    }

    pub(crate) fn liveness_violation(&mut self, after: &str) -> Violation {
        let counts = self.engine().count_by_state();
        let stuck = self.stuck_sample();
        let steps = self.options.liveness_steps;
        self.violation(
            Invariant::Liveness,
            format!("{steps} steps after {after}, payments are still open: {counts:?}; for example {stuck}"),
        )
    }

    /// Every payment settled or failed.
    pub(crate) fn all_final(&mut self) -> Result<bool, Violation> {
        Ok(self.engine().state().book.payments.values().all(|r| r.state.is_terminal()))
    }

    /// The treasury funds every pool well past what is left to pay; an operator resumes every
    /// held payment in flight and retries every other held one.
    pub(crate) async fn clear_holds(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let pools: Vec<(RailId, Asset)> = self.world.config.state.pools.iter().map(|p| (p.rail, p.asset)).collect();
        for (i, (rail, asset)) in pools.into_iter().enumerate() {
            let transfer = 1_000_000 + i as u128;
            if let Err(error) = self.engine().fund_pool(rail, asset, Amount::new(10u128.pow(13)), transfer, now).await {
                return Err(self.violation(Invariant::EngineRuns, format!("funding {rail} {asset}: {error}")));
            }
        }
        let held = self.held();
        for (payment, in_flight) in held {
            // Resuming one payment of a settlement resumes all of it: skip those it took.
            let still_held = self
                .engine()
                .state()
                .book
                .payments
                .get(&payment)
                .is_some_and(|r| matches!(r.state, PaymentState::Held { .. }));
            if !still_held {
                continue;
            }
            let resolution = if in_flight { Resolution::Resume } else { Resolution::Retry };
            let result = self.engine().resolve(payment, resolution, "sim", "faults over", now).await;
            self.operator_result(format!("payment {payment} {resolution:?}"), result.map(|()| "resolved".to_owned()))
                .await?;
        }
        self.note("treasury funded every pool; every hold resolved".into());
        Ok(())
    }

    /// A few open payments with what they could use: for a liveness violation's message.
    pub(crate) fn stuck_sample(&mut self) -> String {
        let engine = self.engine.as_ref().expect("open");
        let state = engine.state();
        let now = self.now;
        // Payments neither final nor held first: they are what liveness is about.
        let (waiting, held): (Vec<_>, Vec<_>) = state
            .book
            .payments
            .values()
            .filter(|r| !r.state.is_terminal())
            .partition(|r| !matches!(r.state, PaymentState::Held { .. }));
        let open = waiting.into_iter().chain(held);
        let records = engine.journal().read_range(1, 1_000_000).unwrap_or_default();
        let held_reason = |payment: PaymentId| {
            records.iter().rev().find_map(|r| match Event::decode(&r.payload) {
                Ok(Event::PaymentHeld { payment: p, reason, .. }) if p == payment => Some(reason),
                _ => None,
            })
        };
        open.take(3)
            .map(|r| {
                let p = &r.payment;
                let rails: Vec<String> = self
                    .world
                    .chains
                    .iter()
                    .filter(|c| p.networks.contains(&c.network))
                    .map(|c| {
                        format!(
                            "{} (pool {} available, breaker {:?})",
                            c.id,
                            state.pools.available(c.id, p.asset),
                            engine.breaker(c.id, now)
                        )
                    })
                    .collect();
                let reason = match r.state {
                    PaymentState::Held { .. } => format!(" (held: {})", held_reason(p.id).unwrap_or_default()),
                    _ => String::new(),
                };
                let settlement =
                    r.settlement.and_then(|id| state.book.settlements.get(&id)).map_or(String::new(), |s| {
                        let nonces: Vec<String> = s
                            .txs
                            .iter()
                            .filter_map(|t| match t.spend {
                                Spend::Nonce { nonce, .. } => Some(nonce.to_string()),
                                Spend::Inputs(_) => None,
                            })
                            .collect();
                        let chain = self.world.chains.iter().find(|c| c.id == s.settlement.rail);
                        format!(
                            " in settlement {} on {} ({:?}, {} versions, {} cancels, nonce {}; chain: {})",
                            s.settlement.id,
                            s.settlement.rail,
                            s.state,
                            s.txs.len(),
                            s.cancels.len(),
                            nonces.first().map_or("-", String::as_str),
                            chain.map_or(String::new(), |c| c.rail.nonces())
                        )
                    });
                format!(
                    "payment {} {}{reason}{settlement} {} {} on [{}]",
                    p.id,
                    r.state,
                    p.amount,
                    p.asset,
                    rails.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The held payments, each with whether it is in flight.
    fn held(&mut self) -> Vec<(PaymentId, bool)> {
        let book = &self.engine().state().book;
        book.payments
            .values()
            .filter_map(|r| match r.state {
                PaymentState::Held { in_flight } => Some((r.payment.id, in_flight)),
                _ => None,
            })
            .collect()
    }
}
