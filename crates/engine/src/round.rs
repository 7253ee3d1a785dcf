//! The engine's round: watch and react, fail over, route and plan, one commit, then the
//! round's broadcasts. `tick_admitting` runs a round with merchants' batches admitted in it:
//! the writer makes the batches durable while the round decides, and one wait covers both.

use model::Timestamp;

use crate::intake::{Intake, IntakeError, Submission};
use crate::{Engine, EngineError};

impl Engine {
    /// One round of work at `now` (see the module's note).
    pub async fn tick(&mut self, now: Timestamp) -> Result<(), EngineError> {
        if self.standby.is_some() {
            return self.follow().map(|_| ());
        }
        self.running()?;
        self.check_lease()?;
        let round = self.round(now).await;
        // Nothing in flight outlives a call (see `gate`), not even after a failed round.
        let durable = self.until_durable().await;
        round.and(durable.map(|_| ()))
    }

    /// `submit_many(batches, now)` and then `tick(now)` in one call, journaling exactly what
    /// those two calls journal, in the same order: the batches are judged and handed to the
    /// writer first, the round then decides (routing their payments too) while the writer
    /// makes them durable, and one wait covers the batches and the round's events. The
    /// round's broadcasts still follow that wait (rule 2). A standby, or an engine that cannot
    /// run a round now, makes the two calls one after the other.
    pub async fn tick_admitting(
        &mut self,
        batches: &[Submission<'_>],
        now: Timestamp,
    ) -> (Vec<Result<Intake, IntakeError>>, Result<(), EngineError>) {
        if self.standby.is_some() || self.running().and_then(|()| self.check_lease()).is_err() {
            let answers = self.submit_many(batches, now).await;
            return (answers, self.tick(now).await);
        }
        let (leftovers, admitted) = self.admit_all(batches, now);
        let sent = match self.decide(now).await {
            // Behind the batches' appends; with them in flight a refusal is reported by the wait.
            Ok(()) => self.send_staged(None),
            Err(error) => Err(error),
        };
        let mut durable = self.until_durable().await;
        if let (Ok(true), Ok(outcomes)) = (&sent, &mut durable) {
            // The round's own answer, last; the batches' answers are the ones before it.
            outcomes.pop();
        }
        let answers = self.answer_all(leftovers, admitted, durable);
        // The round's broadcasts only once everything is durable (a failed wait stopped the engine).
        let round = async {
            sent?;
            self.running()?;
            self.run_effects(now).await?;
            self.after_round(now)
        }
        .await;
        let drained = self.until_durable().await;
        (answers, round.and(drained.map(|_| ())))
    }

    async fn round(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.decide(now).await?;
        self.commit_and_act(now).await?;
        self.after_round(now)
    }

    /// The round's decisions, staged and applied in memory; nothing is committed or sent.
    async fn decide(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.watch_all(now).await?;
        let coordinates = self.coordinates();
        if coordinates {
            self.hold_stale(now)?;
            self.release_guards(now)?;
            self.release_unsigned(now)?;
            self.failover(now);
            self.refresh_quotes(now).await;
            self.route(now)?;
        }
        for rail in self.rails.clone() {
            if coordinates {
                self.plan(&rail, now).await?;
            } else if self.drives(rail.capabilities().rail) {
                self.sign_planned(&rail, now).await?;
            }
        }
        Ok(())
    }

    /// After the round's commit and broadcasts.
    fn after_round(&mut self, now: Timestamp) -> Result<(), EngineError> {
        // The ledger holds only open reservations, so checking it every round is cheap; a
        // failure is a bug, and the engine stops before it acts on a ledger that does not
        // balance.
        if let Err(error) = self.state.pools.ledger().verify() {
            return Err(self.stop(format!("ledger invariant broken: {error}")));
        }
        if self.coordinates() { self.reconcile_on_timer(now) } else { Ok(()) }
    }
}
