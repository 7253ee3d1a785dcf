//! What each rail costs now, for the router. Every quote the engine asks for a settlement
//! teaches it the rail's fee per payout; a rail that has not been quoted for
//! `quote_refresh_ms` (an idle rail, or one just started) is quoted for a reference batch, all
//! such rails at once under the rail timeout, so the router compares rails by what they cost
//! now rather than by what they cost when last used. A refresh that fails counts against the
//! rail's breaker: an idle rail whose node is down is found before anything is routed to it.

use std::sync::Arc;

use model::*;
use rails::{Batch, Payout, Rail};
use router::{BreakerState, Outcome};

use crate::settling::with_headroom;
use crate::{Engine, timed};

/// A rail's last quote: the fee reserved for a settlement (with headroom for its bumps), the
/// fee per payout it implied, and when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quoted {
    pub(crate) reserve: Amount,
    pub(crate) per_payout: Amount,
    pub(crate) at: Timestamp,
}

/// Payouts in the reference batch a refresh quotes (a typical settlement's size, at most the
/// rail's own limit).
const REFERENCE_PAYOUTS: usize = 20;

impl Engine {
    /// Learns from a quote of `payouts` payouts on `rail`.
    pub(crate) fn learn_quote(&mut self, rail: RailId, payouts: usize, fee_max: Amount, now: Timestamp) {
        let reserve = with_headroom(fee_max, self.config.anomaly.bump_budget.saturating_add(1));
        let per_payout = Amount::new(fee_max.units().div_ceil(payouts.max(1) as u128));
        self.quotes.insert(rail, Quoted { reserve, per_payout, at: now });
    }

    /// Quotes a reference batch on every rail whose quote is older than `quote_refresh_ms`
    /// and whose breaker is not open (its probes are settlements).
    pub(crate) async fn refresh_quotes(&mut self, now: Timestamp) {
        let every = self.config.quote_refresh_ms;
        if every == 0 {
            return;
        }
        let due: Vec<Arc<dyn Rail>> = self
            .rails
            .iter()
            .filter(|rail| {
                let id = rail.capabilities().rail;
                let fresh = self.quotes.get(&id).is_some_and(|q| now.saturating_since(q.at) < every);
                let open = matches!(self.breakers[&id].state(now), BreakerState::Open { .. });
                !fresh && !open && !self.state.paused.contains(&id)
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let timeout = self.config.rail_timeout;
        let batches: Vec<Option<Batch>> = due.iter().map(|rail| reference_batch(rail.capabilities())).collect();
        let calls = due.iter().zip(&batches).map(|(rail, batch)| async move {
            match batch {
                Some(batch) => Some(timed(timeout, rail.quote(batch)).await),
                None => None,
            }
        });
        let answers = futures::future::join_all(calls).await;
        for ((rail, batch), answer) in due.iter().zip(&batches).zip(answers) {
            let (Some(batch), Some(answer)) = (batch, answer) else { continue };
            let id = rail.capabilities().rail;
            match answer {
                Ok(quote) => self.learn_quote(id, batch.payouts.len(), quote.fee_max, now),
                Err(error) => {
                    tracing::warn!(rail = %id, %error, "fee quote refresh failed");
                    self.breakers.get_mut(&id).expect("a breaker per rail").record(Outcome::Failure, now);
                }
            }
        }
    }
}

/// A batch of the rail's smallest payouts of its first asset to a fixed address, or `None`
/// for a rail on a network without one here.
fn reference_batch(caps: &Capabilities) -> Option<Batch> {
    let destination = match caps.network {
        Network::Evm(_) => Address::Evm([0x01; 20]),
        _ => return None,
    };
    let asset = *caps.assets.first()?;
    let count = caps.batch_size_max.clamp(1, REFERENCE_PAYOUTS);
    let payouts = (0..count)
        .map(|i| Payout { payment: PaymentId(i as u128), destination: destination.clone(), amount: caps.amount_min })
        .collect();
    Some(Batch { asset, payouts })
}
