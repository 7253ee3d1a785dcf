//! Statistics over a time window, from the journal's records in the window (found by time, as
//! the incident report does) and the live read model: what settled per rail, asset and class,
//! fees per payout per rail, time from intake to final, rollback / reissue / hold rates, and
//! the exposure still unconfirmed per rail. Per-payment facts (class, intake time) come from the
//! history store; at most `PAYMENTS_EXAMINED_MAX` payments are looked up per call, and the
//! answer says when it sampled.

use std::collections::BTreeMap;

use model::*;
use serde::Serialize;

use crate::EngineError;
use crate::report::events_since;
use crate::service::EngineHandle;

/// Most settled payments whose records one call reads (for class and time to final).
pub const PAYMENTS_EXAMINED_MAX: usize = 100_000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub since: u64,
    pub until: u64,
    /// Settled payouts per rail, asset and class: count and amount (decimal).
    pub settled: Vec<Settled>,
    pub fees: Vec<Fees>,
    pub time_to_final: Latency,
    pub accepted: u64,
    pub settlements_final: u64,
    pub settlements_rolled_back: u64,
    pub payments_reissued: u64,
    pub payments_held: u64,
    /// Rolled-back settlements per thousand that ended (final or rolled back).
    pub rollback_permille: u64,
    /// Reissues and holds per thousand payments accepted in the window.
    pub reissue_permille: u64,
    pub hold_permille: u64,
    /// Signed, broadcast or confirmed but not final, per rail and asset (decimal).
    pub exposure: Vec<Exposure>,
    /// Whether class and time to final come from a sample of the settled payments.
    pub sampled: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Settled {
    pub rail: String,
    pub asset: String,
    pub class: String,
    pub count: u64,
    pub amount: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Fees {
    pub rail: String,
    pub fee_asset: String,
    pub settlements: u64,
    pub payouts: u64,
    pub total: String,
    pub per_payout: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Exposure {
    pub rail: String,
    pub asset: String,
    pub settlements: u64,
    pub amount: String,
}

fn permille(part: u64, whole: u64) -> u64 {
    part.saturating_mul(1_000).checked_div(whole).unwrap_or(0)
}

/// Statistics from `since` to `now`.
pub fn stats(handle: &EngineHandle, since: Timestamp, now: Timestamp) -> Result<Stats, EngineError> {
    let mut stats = Stats { since: since.0, until: now.0, ..Stats::default() };
    let mut settled: BTreeMap<(RailId, Asset, ClassName), (u64, Amount)> = BTreeMap::new();
    let mut fees: BTreeMap<(RailId, Asset), (u64, u64, Amount)> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut examined = 0;
    events_since(handle, since, |event| {
        match &event {
            Event::BatchAccepted { payments, .. } | Event::PaymentsAccepted { payments, .. } => {
                stats.accepted += payments.len() as u64;
            }
            Event::SettlementFinal { settlement, fee_paid, at, .. } => {
                stats.settlements_final += 1;
                let Some(record) = handle.settlement(*settlement)? else { return Ok(()) };
                let s = &record.settlement;
                let fee = fees.entry((s.rail, s.fee_asset)).or_insert((0, 0, Amount::ZERO));
                fee.0 += 1;
                fee.1 += s.legs.len() as u64;
                fee.2 = fee.2.checked_add(*fee_paid).unwrap_or(Amount::MAX);
                // The legs' payments in one read (one history read per batch), up to the limit.
                let room = PAYMENTS_EXAMINED_MAX.saturating_sub(examined).min(s.legs.len());
                stats.sampled |= room < s.legs.len();
                examined += room;
                let ids: Vec<PaymentId> = s.legs[..room].iter().map(|leg| leg.payment).collect();
                let mut payments = handle.payments(&ids)?.into_iter();
                for leg in &s.legs {
                    let payment = payments.next().flatten();
                    let class = payment
                        .as_ref()
                        .map_or_else(|| Name::new("unknown").expect("a valid name"), |p| p.payment.class);
                    if let Some(first) = payment.as_ref().and_then(|p| p.steps.first()) {
                        latencies.push(at.saturating_since(first.at));
                    }
                    let entry = settled.entry((s.rail, s.asset, class)).or_insert((0, Amount::ZERO));
                    entry.0 += 1;
                    entry.1 = entry.1.checked_add(leg.amount).unwrap_or(Amount::MAX);
                }
            }
            Event::SettlementDead { .. } => stats.settlements_rolled_back += 1,
            Event::PaymentReissued { .. } => stats.payments_reissued += 1,
            Event::PaymentHeld { .. } => stats.payments_held += 1,
            _ => {}
        }
        Ok(())
    })?;
    stats.settled = settled
        .into_iter()
        .map(|((rail, asset, class), (count, amount))| Settled {
            rail: rail.to_string(),
            asset: asset.symbol().to_owned(),
            class: class.to_string(),
            count,
            amount: asset.format_amount(amount),
        })
        .collect();
    stats.fees = fees
        .into_iter()
        .map(|((rail, asset), (settlements, payouts, total))| Fees {
            rail: rail.to_string(),
            fee_asset: asset.symbol().to_owned(),
            settlements,
            payouts,
            total: asset.format_amount(total),
            per_payout: asset.format_amount(Amount::new(total.units() / u128::from(payouts.max(1)))),
        })
        .collect();
    latencies.sort_unstable();
    let pick = |p: usize| {
        latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    stats.time_to_final = Latency { count: latencies.len() as u64, p50_ms: pick(50), p99_ms: pick(99) };
    let ended = stats.settlements_final + stats.settlements_rolled_back;
    stats.rollback_permille = permille(stats.settlements_rolled_back, ended);
    stats.reissue_permille = permille(stats.payments_reissued, stats.accepted);
    stats.hold_permille = permille(stats.payments_held, stats.accepted);
    stats.exposure = handle.read(|m| {
        let mut exposure: BTreeMap<(RailId, Asset), (u64, Amount)> = BTreeMap::new();
        for record in m.settlements.values() {
            if matches!(
                record.state,
                SettlementState::Signed | SettlementState::Broadcast | SettlementState::Confirmed { .. }
            ) {
                let s = &record.settlement;
                let entry = exposure.entry((s.rail, s.asset)).or_insert((0, Amount::ZERO));
                entry.0 += 1;
                entry.1 = entry.1.checked_add(s.total().unwrap_or(Amount::MAX)).unwrap_or(Amount::MAX);
            }
        }
        exposure
            .into_iter()
            .map(|((rail, asset), (settlements, amount))| Exposure {
                rail: rail.to_string(),
                asset: asset.symbol().to_owned(),
                settlements,
                amount: asset.format_amount(amount),
            })
            .collect()
    });
    Ok(stats)
}
