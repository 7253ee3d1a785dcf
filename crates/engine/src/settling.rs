//! Settling: a flushed group of payments becomes a settlement — quoted, reserved, signed and
//! staged — and, after the round's commit, broadcast.

use std::sync::Arc;

use model::*;
use rails::{Batch, Payout, Rail};
use router::Outcome;

use crate::{Effect, Engine, EngineError, timed};

impl Engine {
    pub(crate) fn batch_of(&self, asset: Asset, ids: &[PaymentId]) -> Batch {
        let payouts = ids
            .iter()
            .map(|id| {
                let p = &self.state.book.payments[id].payment;
                Payout { payment: *id, destination: p.destination.clone(), amount: p.amount }
            })
            .collect();
        Batch { asset, payouts }
    }

    /// Plans and signs one settlement and stages its broadcast. On any refusal before signing
    /// the payments go back to routing; nothing was signed.
    pub(crate) async fn settle(
        &mut self,
        rail: &Arc<dyn Rail>,
        caps: &Capabilities,
        asset: Asset,
        ids: Vec<PaymentId>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let batch = self.batch_of(asset, &ids);
        let quote = match timed(self.config.rail_timeout, rail.quote(&batch)).await {
            Ok(quote) => quote,
            Err(error) => {
                tracing::warn!(rail = %caps.rail, %error, payments = ids.len(), "quote failed; payments routed again");
                self.breakers.get_mut(&caps.rail).expect("breaker").record(Outcome::Failure, now);
                self.staging.waiting(ids);
                return Ok(());
            }
        };
        self.settlements_made += 1;
        // Unique and increasing: the journal's tip (a settlement planned before a restart was
        // committed, so the tip has moved past it since) and a counter of this process.
        let id = SettlementId(u128::from(self.journal.tip()) << 64 | u128::from(self.settlements_made));
        let legs = batch
            .payouts
            .iter()
            .map(|p| Leg { payment: p.payment, destination: p.destination.clone(), amount: p.amount })
            .collect();
        let settlement =
            Settlement { id, rail: caps.rail, network: caps.network, asset, legs, fee_reserved: quote.fee_max };
        // The pools may refuse (not enough liquidity): then nothing is staged, and the
        // payments go back to routing.
        let fits =
            self.state.reserve_for(&settlement).map(|r| self.state.pools.can_reserve(&r).is_ok()).unwrap_or(false);
        if !fits {
            tracing::debug!(rail = %caps.rail, %asset, payments = ids.len(), "pool cannot reserve; payments routed again");
            self.staging.waiting(ids);
            return Ok(());
        }
        self.stage(vec![Event::SettlementPlanned { settlement, at: now }])?;
        let tx = match timed(self.config.rail_timeout, rail.build(&batch, &quote)).await {
            Ok(tx) => tx,
            Err(error) => {
                // Nothing was signed: release, so the payments queue again.
                tracing::warn!(rail = %caps.rail, settlement = %id, %error, "build failed; settlement released");
                return self.stage(vec![Event::SettlementReleased { settlement: id, at: now }]);
            }
        };
        self.stage(vec![Event::SettlementSigned { settlement: id, tx: tx.clone(), at: now }])?;
        self.watching.insert(id, crate::Watching { last_action_at: now, ..crate::Watching::default() });
        self.effects.push(Effect::Broadcast { settlement: id, tx });
        Ok(())
    }

    /// Runs the effects of the last commit, concurrently (each under the rail timeout), and
    /// stages what they tell: a successful first broadcast is journaled by the next commit.
    pub(crate) async fn run_effects(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.running()?;
        let effects = std::mem::take(&mut self.effects);
        if effects.is_empty() {
            return Ok(());
        }
        let timeout = self.config.rail_timeout;
        let calls = effects.iter().map(|effect| {
            let Effect::Broadcast { settlement, tx } = effect;
            let rail = self.rail_of(*settlement);
            async move { timed(timeout, rail.broadcast(tx)).await }
        });
        let outcomes = futures::future::join_all(calls).await;
        for (effect, outcome) in effects.into_iter().zip(outcomes) {
            let Effect::Broadcast { settlement, tx } = effect;
            let rail = self.state.book.settlements[&settlement].settlement.rail;
            let breaker = self.breakers.get_mut(&rail).expect("breaker");
            match outcome {
                Ok(()) => {
                    breaker.record(Outcome::Success, now);
                    let state = self.state.book.settlements[&settlement].state;
                    if state == SettlementState::Signed {
                        self.stage(vec![Event::SettlementBroadcast { settlement, txid: tx.txid, at: now }])?;
                    }
                }
                Err(error) => {
                    breaker.record(Outcome::Failure, now);
                    tracing::warn!(rail = %rail, %settlement, %error, "broadcast failed; the same bytes go out again");
                }
            }
        }
        Ok(())
    }
}
