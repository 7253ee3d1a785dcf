//! Settling: a flushed group of payments becomes a settlement — quoted, reserved, signed and
//! staged — and, after the round's commit, broadcast.

use std::sync::Arc;

use model::*;
use rails::{Batch, FeeDetail, FeeQuote, Payout, Rail};
use router::Outcome;

use crate::{Effect, Engine, EngineError, timed};

impl Engine {
    /// The batch a rail is asked to quote and sign for `ids`, with how soon it should be final:
    /// the tightest of its payments' deadlines, or of their classes' default deadlines (a
    /// rail whose fee buys speed picks its confirmation target from it).
    pub(crate) fn batch_of(&self, asset: Asset, ids: &[PaymentId], now: Timestamp) -> Batch {
        let mut within_ms: Option<u64> = None;
        let payouts = ids
            .iter()
            .map(|id| {
                let p = &self.state.book.payments[id].payment;
                let within = match p.deadline {
                    Some(deadline) => Some(deadline.saturating_since(now)),
                    None => self.config.queue.classes.iter().find(|c| c.name == p.class).map(|c| c.deadline_default_ms),
                };
                within_ms = match (within_ms, within) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                Payout { payment: *id, destination: p.destination.clone(), amount: p.amount }
            })
            .collect();
        Batch { asset, payouts, within_ms }
    }

    /// Plans and signs one settlement and stages its broadcast. On any refusal before signing
    /// the payments go back to routing; nothing was signed. When the pools can carry only part
    /// of the batch, the part they can carry is settled (quoted again) and the rest goes back
    /// to routing, where the router now sees the pool short. Whether a settlement was planned.
    pub(crate) async fn settle(
        &mut self,
        rail: &Arc<dyn Rail>,
        caps: &Capabilities,
        asset: Asset,
        mut ids: Vec<PaymentId>,
        now: Timestamp,
    ) -> Result<bool, EngineError> {
        let mut attempt = 0;
        let (batch, quote, settlement) = loop {
            attempt += 1;
            let batch = self.batch_of(asset, &ids, now);
            let quote = match timed(self.config.rail_timeout, rail.quote(&batch)).await {
                Ok(quote) => quote,
                Err(error) => {
                    tracing::warn!(rail = %caps.rail, %error, payments = ids.len(), "quote failed; payments routed again");
                    self.breakers.get_mut(&caps.rail).expect("breaker").record(Outcome::Failure, now);
                    self.staging.waiting(ids);
                    return Ok(false);
                }
            };
            // The fee reserved covers every version the anomaly policy may sign: the bumps
            // of its budget and a cancel (`fee_reserve`). What the version that is mined
            // pays is posted; the rest goes back to the pool.
            let fee_reserved = fee_reserve(&quote, self.config.anomaly.bump_budget.saturating_add(1));
            self.learn_reserve(caps.rail, &quote);
            self.settlements_made += 1;
            // Unique and increasing: the journal's tip (a settlement planned before a restart
            // was committed, so the tip has moved past it since) and a counter of this process.
            let id = SettlementId(u128::from(self.decided_tip()) << 64 | u128::from(self.settlements_made));
            let legs = batch
                .payouts
                .iter()
                .map(|p| Leg { payment: p.payment, destination: p.destination.clone(), amount: p.amount })
                .collect();
            let settlement = Settlement {
                id,
                rail: caps.rail,
                network: caps.network,
                asset,
                legs,
                fee_asset: caps.fee_asset,
                fee_reserved,
            };
            if self.fits(&settlement, settlement.legs.len()) {
                break (batch, quote, settlement);
            }
            // The pools cannot carry it all: settle the longest head they can carry.
            let head = self.fitting_head(&settlement);
            tracing::debug!(rail = %caps.rail, %asset, payments = ids.len(), head, "pool cannot reserve it all");
            if head == 0 || attempt > 1 {
                self.staging.waiting(ids);
                return Ok(false);
            }
            let rest = ids.split_off(head);
            self.staging.waiting(rest);
        };
        let id = settlement.id;
        self.stage(vec![Event::SettlementPlanned { settlement, at: now }])?;
        if !self.drives(caps.rail) {
            // Another node drives the rail: it signs this in its turn (see `partition`).
            return Ok(true);
        }
        let tx = match timed(self.config.rail_timeout, rail.build(&batch, &quote)).await {
            Ok(tx) => tx,
            Err(error) => {
                // Nothing was signed: release, so the payments queue again.
                tracing::warn!(rail = %caps.rail, settlement = %id, %error, "build failed; settlement released");
                self.stage(vec![Event::SettlementReleased { settlement: id, at: now }])?;
                return Ok(false);
            }
        };
        self.stage(vec![Event::SettlementSigned { settlement: id, tx: tx.clone(), at: now }])?;
        self.watching.insert(id, crate::Watching { last_action_at: now, ..crate::Watching::default() });
        self.effects.push(Effect::Broadcast { settlement: id, tx, children: Vec::new() });
        Ok(true)
    }

    /// Whether the pools can reserve the first `legs` legs of `settlement` and its fee.
    fn fits(&self, settlement: &Settlement, legs: usize) -> bool {
        let fits = |s: &Settlement| self.state.reserve_for(s).is_ok_and(|r| self.state.pools.can_reserve(&r).is_ok());
        if legs == settlement.legs.len() {
            return fits(settlement);
        }
        fits(&Settlement { legs: settlement.legs[..legs].to_vec(), ..settlement.clone() })
    }

    /// The most legs, from the first, the pools can carry (fewer legs never need more).
    fn fitting_head(&self, settlement: &Settlement) -> usize {
        let (mut fits, mut fails) = (0, settlement.legs.len());
        while fails - fits > 1 {
            let mid = fits + (fails - fits) / 2;
            if self.fits(settlement, mid) { fits = mid } else { fails = mid }
        }
        fits
    }

    /// Runs the effects of the last commit, concurrently (each under the rail timeout), and
    /// stages what they tell: a successful first broadcast is journaled by the next commit.
    pub(crate) async fn run_effects(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.running()?;
        // What was committed is journaled: a node that lost its lease leaves sending it to
        // the next holder, whose recovery sends the same bytes.
        self.check_lease()?;
        let effects = std::mem::take(&mut self.effects);
        if effects.is_empty() {
            return Ok(());
        }
        let timeout = self.config.rail_timeout;
        let targets: Vec<(RailId, SettlementId, &SignedTx, &[SignedTx])> = effects
            .iter()
            .map(|effect| match effect {
                Effect::Broadcast { settlement, tx, children } => {
                    (self.state.book.settlements[settlement].settlement.rail, *settlement, tx, children.as_slice())
                }
                Effect::Rebroadcast { rail, settlement, tx } => (*rail, *settlement, tx, &[][..]),
            })
            .collect();
        let calls = targets.iter().map(|(rail, settlement, tx, children)| {
            let rail = self.rail(*rail).cloned();
            async move {
                let Some(rail) = rail else {
                    return Err(rails::RailError::Config("the rail is not configured".into()));
                };
                let sent = timed(timeout, rail.broadcast(tx)).await;
                // A child goes out after its parent: the node needs the parent to take it.
                if sent.is_ok() {
                    for child in *children {
                        if let Err(error) = timed(timeout, rail.broadcast(child)).await {
                            tracing::warn!(%settlement, %error, "a child was not sent; it goes out again with its parent");
                        }
                    }
                }
                sent
            }
        });
        let outcomes = futures::future::join_all(calls).await;
        let targets: Vec<(RailId, SettlementId, SignedTx)> =
            targets.into_iter().map(|(rail, settlement, tx, _)| (rail, settlement, tx.clone())).collect();
        for ((effect, (rail, settlement, tx)), outcome) in effects.iter().zip(targets).zip(outcomes) {
            if let Effect::Rebroadcast { .. } = effect {
                match outcome {
                    Ok(()) => tracing::info!(rail = %rail, %settlement, "final settlement off its chain: sent again"),
                    Err(error) => {
                        tracing::warn!(rail = %rail, %settlement, %error, "final settlement off its chain: sending it again failed")
                    }
                }
                continue;
            }
            let Some(breaker) = self.breakers.get_mut(&rail) else {
                tracing::warn!(rail = %rail, %settlement, "not sent: the rail is not configured");
                continue;
            };
            if let Some(info) = self.watching.get_mut(&settlement) {
                match &outcome {
                    Ok(()) => (info.refusals, info.last_refusal) = (0, None),
                    Err(rails::RailError::Rejected(why)) => {
                        info.refusals += 1;
                        info.last_refusal = Some(why.clone());
                    }
                    // Unreachable or timed out: the breaker's business, not a refusal.
                    Err(_) => {}
                }
            }
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

/// `fee` raised by an eighth (rounded up) `replacements` times: the most a settlement's last
/// replacement can cost when each pays an eighth more than the one before.
/// The fee to reserve for a settlement quoted `quote` that may be replaced `replacements`
/// times, each version an eighth dearer than the last. On Bitcoin a replacement also pays at
/// least 1 sat/vB more than the version it replaces (BIP 125), which at low rates is far more
/// than an eighth, and a child pulling a version in (child pays for parent) pays for its own
/// size at the package's rate: the reserve is the last step's rate on the size plus a child's.
pub(crate) fn fee_reserve(quote: &FeeQuote, replacements: u32) -> Amount {
    let mut fee = quote.fee_max.units();
    for _ in 0..replacements {
        fee = fee.saturating_mul(9).div_ceil(8);
    }
    if let FeeDetail::Bitcoin { sat_per_kvb, .. } = quote.detail {
        let size = quote.fee_max.units().saturating_mul(1_000) / u128::from(sat_per_kvb.max(1));
        let mut rate = u128::from(sat_per_kvb);
        for _ in 0..replacements {
            rate = rate.saturating_mul(9).div_ceil(8).max(rate.saturating_add(1_000));
        }
        fee = fee.max(size.saturating_add(CHILD_VBYTES).saturating_mul(rate).div_ceil(1_000));
    }
    Amount::new(fee)
}

/// A child's size, vbytes: one P2WPKH input and one P2WPKH output, with a little to spare.
const CHILD_VBYTES: u128 = 120;
