//! Routing and staging: failover of open rails' queues, routing of unrouted payments into the
//! queue, and planning: dequeue under rate limits into the batcher, and flush settlements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use model::*;
use queue::Enqueue;
use rails::Rail;
use router::{Breaker, RailState};

use crate::Engine;
use crate::quotes::Quoted;

/// What the router needs to know of each rail now. A paused rail looks like one whose breaker
/// is open: never chosen. A rail's fee reserve is its last quote's most (one settlement's fee,
/// with headroom); before any quote, one unit, so that a rail whose fee pool is empty is never
/// chosen. Its fee cost is its fee per payout in permille of the cheapest rail's (1000 for the
/// cheapest): unit-free, so the weights trade it against time whatever the fee asset's scale.
/// A rail not quoted yet counts as the dearest known.
pub(crate) fn rail_states<'a>(
    rails: &'a [Arc<dyn Rail>],
    breakers: &BTreeMap<RailId, Breaker>,
    paused: &BTreeSet<RailId>,
    quotes: &BTreeMap<RailId, Quoted>,
    now: Timestamp,
) -> Vec<RailState<'a>> {
    let costs: Vec<u128> = quotes.values().filter_map(|q| q.per_payout).map(|(cost, _)| cost.units().max(1)).collect();
    let cheapest = costs.iter().copied().min().unwrap_or(1);
    let permille = |cost: u128| u64::try_from(cost.max(1).saturating_mul(1000) / cheapest).unwrap_or(u64::MAX);
    let dearest = costs.iter().copied().map(permille).max().unwrap_or(1000);
    rails
        .iter()
        .map(|rail| {
            let caps = rail.capabilities();
            let breaker = &breakers[&caps.rail];
            let state = if paused.contains(&caps.rail) {
                router::BreakerState::Open { until: Timestamp(u64::MAX) }
            } else {
                breaker.state(now)
            };
            let quote = quotes.get(&caps.rail);
            RailState {
                capabilities: caps,
                breaker: state,
                fee_cost: quote.and_then(|q| q.per_payout).map_or(dearest, |(cost, _)| permille(cost.units())),
                fee_reserve: quote.map_or(Amount::new(1), |q| q.reserve),
                success_permille: breaker.success_permille(),
            }
        })
        .collect()
}

impl Engine {
    /// Payments queued for a rail whose breaker is open move to the next eligible rail (the
    /// router decides with that rail out); those with none stay. In-flight settlements are not
    /// touched: they stay watched on their rail.
    pub(crate) fn failover(&mut self, now: Timestamp) {
        let open: Vec<RailId> = self
            .breakers
            .iter()
            .filter(|(_, b)| matches!(b.state(now), router::BreakerState::Open { .. }))
            .map(|(rail, _)| *rail)
            .collect();
        for failed in open {
            let states = rail_states(&self.rails, &self.breakers, &self.state.paused, &self.quotes, now);
            let (router, state) = (&self.router, &self.state);
            // What waited in the batcher for that rail goes back to routing.
            let report = self.staging.drain(failed, false, now, |item| {
                let payment = &state.book.payments[&item.id].payment;
                let urgent = state.is_urgent(payment.class);
                router.decide(payment, item.deadline, &states, &|r, a| state.pools.spendable(r, a, urgent), now).chosen
            });
            if !report.moves.is_empty() {
                tracing::info!(rail = %failed, moved = report.moves.len(), "breaker open: queued payments moved");
            }
            self.moved_by_failover += report.moves.len() as u64;
        }
    }

    /// Payments queued longer than their class's age limit are held, with the reason and a
    /// notice to the merchant; an operator retries or fails them. Checked at most once a second.
    pub(crate) fn hold_stale(&mut self, now: Timestamp) -> Result<(), crate::EngineError> {
        if now.saturating_since(self.stale_checked_at) < 1_000 {
            return Ok(());
        }
        self.stale_checked_at = now;
        let stale = self.staging.take_stale(now);
        if stale.is_empty() {
            return Ok(());
        }
        let mut events = Vec::with_capacity(stale.len());
        for item in stale {
            let age_max = self.config.queue.classes.iter().find(|c| c.name == item.class).and_then(|c| c.age_max_ms);
            let reason = format!(
                "queued longer than class {}'s age limit of {} ms on rail {}; retry or fail it",
                item.class,
                age_max.unwrap_or(0),
                item.rail
            );
            events.push(Event::PaymentHeld { payment: item.id, reason, at: now });
        }
        tracing::warn!(held = events.len(), "payments past their class's age limit held");
        self.stage(events)
    }

    /// Unrouted payments get a rail and join its queue; those no rail takes now stay unrouted,
    /// and one no rail has taken for `unroutable_hold_ms` is held with every rail's reason (and
    /// the merchant told), for treasury to fund a pool or an operator to retry or fail it.
    pub(crate) fn route(&mut self, now: Timestamp) -> Result<(), crate::EngineError> {
        let unrouted = self.staging.unrouted(&self.state.book);
        if unrouted.is_empty() {
            return Ok(());
        }
        let book = &self.state.book;
        let deadlines: Vec<(&Payment, Timestamp)> = unrouted
            .iter()
            .map(|id| {
                let payment = &book.payments[id].payment;
                let class = self.config.queue.classes.iter().find(|c| c.name == payment.class);
                let default = class.map_or(3_600_000, |c| c.deadline_default_ms);
                (payment, payment.deadline.unwrap_or(now.saturating_add_ms(default)))
            })
            .collect();
        let states = rail_states(&self.rails, &self.breakers, &self.state.paused, &self.quotes, now);
        let state = &self.state;
        // Urgent payments may use pools below their minimum, the rest may not: two groups,
        // each decided against the pools as the decisions before it left them. (What the two
        // together over-commit, the reservation refuses and the next round decides again.)
        // Lists of a round's size are sized once, not grown by doubling (see `Queue::dequeue`).
        let (mut urgent, mut rest) = (Vec::new(), Vec::with_capacity(deadlines.len()));
        for entry in deadlines {
            if state.is_urgent(entry.0.class) { urgent.push(entry) } else { rest.push(entry) }
        }
        let mut decisions = Vec::with_capacity(urgent.len() + rest.len());
        decisions.extend(self.router.decide_all(&urgent, &states, &|r, a| state.pools.spendable(r, a, true), now));
        decisions.extend(self.router.decide_all(&rest, &states, &|r, a| state.pools.spendable(r, a, false), now));
        let deadlines: Vec<(&Payment, Timestamp)> = urgent.into_iter().chain(rest).collect();
        let mut counts: BTreeMap<RailId, usize> = BTreeMap::new();
        for rail in decisions.iter().filter_map(|d| d.chosen) {
            *counts.entry(rail).or_default() += 1;
        }
        let mut by_rail: BTreeMap<RailId, Vec<Enqueue>> =
            counts.into_iter().map(|(rail, count)| (rail, Vec::with_capacity(count))).collect();
        let mut held = Vec::new();
        if self.track_changes {
            // Why each went where it went (not journaled: routing is decided again after a
            // restart), for the read model.
            // Payments routed alike (same rails, same scores) share one text.
            let mut texts: std::collections::HashMap<String, Arc<str>> = std::collections::HashMap::new();
            for decision in &decisions {
                let text = decision.explain();
                let shared = texts.entry(text).or_insert_with_key(|text| Arc::from(text.as_str())).clone();
                self.routes.insert(decision.payment, shared);
                self.touched.insert(decision.payment);
            }
        }
        for ((payment, deadline), decision) in deadlines.iter().zip(&decisions) {
            if decision.chosen.is_none() {
                let since = self.staging.unroutable(payment.id, now);
                if now.saturating_since(since) >= self.config.unroutable_hold_ms {
                    held.push(Event::PaymentHeld { payment: payment.id, reason: unroutable_reason(decision), at: now });
                }
            }
            if let Some(rail) = decision.chosen {
                by_rail.entry(rail).or_default().push(Enqueue {
                    id: payment.id,
                    merchant: payment.merchant,
                    class: payment.class,
                    rail,
                    deadline: Some(*deadline),
                });
            }
        }
        for (rail, batch) in by_rail {
            // A full queue leaves them unrouted: they are routed again next round.
            if let Err(error) = self.staging.enqueue(&batch, now) {
                tracing::debug!(rail = %rail, %error, "queue refused payments; retried next round");
            }
        }
        if !held.is_empty() {
            tracing::warn!(held = held.len(), "payments no rail could take held");
            self.stage(held)?;
        }
        Ok(())
    }

    /// Dequeues what `rail` may take now into the batcher and settles what the batcher flushes.
    pub(crate) async fn plan(&mut self, rail: &Arc<dyn Rail>, now: Timestamp) -> Result<(), crate::EngineError> {
        let caps = rail.capabilities().clone();
        if self.state.paused.contains(&caps.rail) {
            return Ok(());
        }
        // A half-open breaker admits a bounded number of probes: one settlement at a time
        // until its outcomes close the breaker again (or open it).
        let breaker = self.breakers.get_mut(&caps.rail).expect("a breaker per rail");
        let probing = matches!(breaker.state(now), router::BreakerState::HalfOpen);
        if !breaker.admit(now) {
            return Ok(());
        }
        let settlements = if probing { 1 } else { self.config.settlements_per_tick_max };
        let most = caps.batch_size_max.saturating_mul(settlements);
        let book = &self.state.book;
        let asset_of =
            |id: PaymentId| book.payments.get(&id).filter(|r| r.state == PaymentState::Queued).map(|r| r.payment.asset);
        let flushes = self.staging.dequeue_and_flush(&caps, most, now, asset_of);
        let mut planned = 0;
        for flush in flushes {
            if probing && planned > 0 {
                // One probe at a time: the rest go back to routing.
                self.staging.waiting(flush.payments);
                continue;
            }
            // A payment may have left Queued meanwhile (an operator failed it): keep the rest.
            let ids: Vec<PaymentId> = flush
                .payments
                .into_iter()
                .filter(|id| self.state.book.payments.get(id).is_some_and(|r| r.state == PaymentState::Queued))
                .collect();
            // The guards once more, as they are now: the last check before signing.
            let ids = self.guard_before_signing(ids, now)?;
            if !ids.is_empty() && self.settle(rail, &caps, flush.asset, ids, now).await? {
                planned += 1;
            }
        }
        if probing && planned == 0 {
            // The probe admitted above was not sent: its slot goes back.
            self.breakers.get_mut(&caps.rail).expect("a breaker per rail").cancel_probe();
        }
        Ok(())
    }
}

/// Why no rail can take a payment, rail by rail, in words for the merchant and the operator.
fn unroutable_reason(decision: &router::Decision) -> String {
    let reasons: Vec<String> = decision
        .rails
        .iter()
        .filter_map(|r| match &r.verdict {
            router::Verdict::Ineligible(why) => Some(format!("{}: {why}", r.rail)),
            router::Verdict::Eligible(_) => None,
        })
        .collect();
    format!("no rail can take it: {}; fund a pool or resume a rail, then retry it", reasons.join("; "))
}
