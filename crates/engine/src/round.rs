//! The engine's round: watch and react, fail over, route and plan, one commit, then the
//! round's broadcasts.

use model::Timestamp;

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

    async fn round(&mut self, now: Timestamp) -> Result<(), EngineError> {
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
        self.commit_and_act(now).await?;
        // The ledger holds only open reservations, so checking it every round is cheap; a
        // failure is a bug, and the engine stops before it acts on a ledger that does not
        // balance.
        if let Err(error) = self.state.pools.ledger().verify() {
            return Err(self.stop(format!("ledger invariant broken: {error}")));
        }
        if coordinates { self.reconcile_on_timer(now) } else { Ok(()) }
    }
}
