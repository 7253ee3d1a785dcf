//! The incident report: what an operations team writes during an outage (impact, actions,
//! ETA), built from the journal since a time and the live read model. Everything in it is a
//! fact of the journal or of the state now; the recovery estimate names the inputs it rests on.
//!
//! The journal is searched for `since` by time (events carry the engine's clock, which only
//! moves forward), so a report reads the records of its window, not all history.

use std::collections::BTreeMap;
use std::fmt::Write;

use model::*;
use serde::Serialize;

use crate::EngineError;
use crate::service::EngineHandle;

#[derive(Clone, Debug, Serialize)]
pub struct IncidentReport {
    pub since: u64,
    pub until: u64,
    pub rails: Vec<RailImpact>,
    pub delayed: Vec<Delayed>,
    pub drains: Vec<Drained>,
    pub in_flight: Vec<InFlight>,
    /// Holds in the window, by reason (its first words), and how many are still held now.
    pub holds: BTreeMap<String, u64>,
    pub held_now: u64,
    pub anomalies_open: Vec<String>,
    pub anomalies_resolved: Vec<String>,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RailImpact {
    pub rail: String,
    /// Why the rail is in the report.
    pub signs: Vec<String>,
    pub paused_now: bool,
    pub breaker_now: String,
    pub queued_now: usize,
    /// When the rail should carry payments to finality again, from now, if it can be said.
    pub recovery_ms: Option<u64>,
    /// The estimate in words, with the inputs it rests on.
    pub recovery: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Delayed {
    pub merchant: u64,
    pub class: String,
    pub payments: u64,
    /// Per asset, the amount delayed (decimal).
    pub amounts: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Drained {
    pub at: u64,
    pub rail: String,
    pub moved: u32,
    pub by: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct InFlight {
    pub settlement: String,
    pub rail: String,
    pub state: String,
    pub payments: usize,
    /// Expected time to finality from now (the rail's declared time less what has passed).
    pub eta_ms: u64,
    /// How long past its expected finality it is (0 when not yet due).
    pub overdue_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Action {
    pub at: u64,
    pub by: String,
    pub what: String,
    pub reason: String,
}

/// The first record at or after `since` (by the events' time), by binary search.
pub(crate) fn first_at_or_after(handle: &EngineHandle, since: Timestamp) -> Result<u64, EngineError> {
    let journal = handle.journal();
    let (mut low, mut high) = (1, journal.tip() + 1);
    while low < high {
        let mid = low + (high - low) / 2;
        let at = Event::decode(&journal.read(mid)?.payload).map(|e| e.at()).unwrap_or(since);
        if at < since { low = mid + 1 } else { high = mid }
    }
    Ok(low)
}

/// Every event from the first at or after `since` to the journal's tip, in order (records that
/// do not decode are skipped).
pub(crate) fn events_since(
    handle: &EngineHandle,
    since: Timestamp,
    mut each: impl FnMut(Event) -> Result<(), EngineError>,
) -> Result<(), EngineError> {
    let journal = handle.journal();
    let mut seq = first_at_or_after(handle, since)?;
    let tip = journal.tip();
    while seq <= tip {
        let records = journal.read_range(seq, 4_096)?;
        let Some(last) = records.last() else { break };
        seq = last.seq + 1;
        for record in records {
            if let Ok(event) = Event::decode(&record.payload) {
                each(event)?;
            }
        }
    }
    Ok(())
}

fn short(reason: &str) -> String {
    let head: String = reason.split([':', ';']).next().unwrap_or(reason).chars().take(80).collect();
    head.trim().to_owned()
}

/// Builds the report for the window from `since` to `now`.
pub fn incident(handle: &EngineHandle, since: Timestamp, now: Timestamp) -> Result<IncidentReport, EngineError> {
    let mut signs: BTreeMap<RailId, Vec<String>> = BTreeMap::new();
    let mut drains = Vec::new();
    let mut actions = Vec::new();
    let mut holds: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = BTreeMap::new();
    let mut restored = Vec::new();
    let mut dead: BTreeMap<RailId, u32> = BTreeMap::new();
    events_since(handle, since, |event| {
        let at = event.at().0;
        if crate::audit::is_action(&event) {
            let (by, what, reason) = describe(&event);
            actions.push(Action { at, by, what, reason });
        }
        match &event {
            Event::RailPaused { rail, reason, .. } => {
                signs.entry(*rail).or_default().push(format!("paused at {}: {reason}", utc(at)));
            }
            Event::RailDrained { rail, moved, operator, reason, .. } => {
                signs.entry(*rail).or_default().push(format!("drained at {}: {moved} moved", utc(at)));
                drains.push(Drained {
                    at,
                    rail: rail.to_string(),
                    moved: *moved,
                    by: operator.clone(),
                    reason: reason.clone(),
                });
            }
            Event::PaymentHeld { reason, .. } => *holds.entry(short(reason)).or_default() += 1,
            Event::SettlementDead { settlement, .. } | Event::SettlementReorged { settlement, .. } => {
                if let Ok(Some(record)) = handle.settlement(*settlement) {
                    *dead.entry(record.settlement.rail).or_default() += 1;
                }
            }
            Event::FinalityLost { settlement, rail, .. } => {
                lost.insert(*settlement, *rail);
            }
            Event::FinalityRestored { settlement, .. } => {
                if let Some(rail) = lost.remove(settlement) {
                    restored.push(format!("settlement {settlement} on {rail}: final again at {}", utc(at)));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    for (rail, count) in dead {
        signs.entry(rail).or_default().push(format!("{count} settlement(s) rolled back or reorged"));
    }
    handle.read(|m| {
        let mut rails = Vec::new();
        for view in &m.rails {
            let breaker = match view.breaker {
                router::BreakerState::Closed => "closed".to_owned(),
                router::BreakerState::HalfOpen => "half-open (probing)".to_owned(),
                router::BreakerState::Open { until } => format!("open until {}", utc(until.0)),
            };
            let mut rail_signs = signs.remove(&view.rail).unwrap_or_default();
            if view.paused {
                rail_signs.push("paused now".to_owned());
            }
            if !matches!(view.breaker, router::BreakerState::Closed) {
                rail_signs.push(format!("breaker {breaker}"));
            }
            rail_signs.dedup();
            if rail_signs.is_empty() {
                continue;
            }
            let (recovery_ms, recovery) = estimate(view, now);
            rails.push(RailImpact {
                rail: view.rail.to_string(),
                signs: rail_signs,
                paused_now: view.paused,
                breaker_now: breaker,
                queued_now: view.queued,
                recovery_ms,
                recovery,
            });
        }
        let deadline_default = |class: ClassName| {
            m.policy.classes.iter().find(|c| c.name == class).map_or(3_600_000, |c| c.deadline_default_ms)
        };
        let mut delayed: BTreeMap<(u64, String), (u64, BTreeMap<Asset, Amount>)> = BTreeMap::new();
        let mut held_now = 0;
        for record in m.payments.values() {
            let p = &record.payment;
            let accepted = record.steps.first().map_or(now, |s| s.at);
            let deadline = p.deadline.unwrap_or(accepted.saturating_add_ms(deadline_default(p.class)));
            let held = matches!(record.state, PaymentState::Held { .. });
            held_now += u64::from(held);
            if held || deadline < now {
                let entry = delayed.entry((p.merchant.0, p.class.to_string())).or_default();
                entry.0 += 1;
                let sum = entry.1.entry(p.asset).or_insert(Amount::ZERO);
                *sum = sum.checked_add(p.amount).unwrap_or(Amount::MAX);
            }
        }
        let delayed = delayed
            .into_iter()
            .map(|((merchant, class), (payments, amounts))| Delayed {
                merchant,
                class,
                payments,
                amounts: amounts.into_iter().map(|(a, x)| (a.symbol().to_owned(), a.format_amount(x))).collect(),
            })
            .collect();
        let finality: BTreeMap<RailId, u64> = m.rails.iter().map(|r| (r.rail, r.finality_expected_ms)).collect();
        let mut in_flight: Vec<InFlight> = m
            .settlements
            .values()
            .filter(|s| {
                matches!(
                    s.state,
                    SettlementState::Signed | SettlementState::Broadcast | SettlementState::Confirmed { .. }
                )
            })
            .map(|s| {
                let sent = s.settlement.legs.first().and_then(|l| m.payments.get(&l.payment)).and_then(|p| {
                    p.steps.iter().rev().find(|step| step.state == PaymentState::Signed).map(|step| step.at)
                });
                let expected = finality.get(&s.settlement.rail).copied().unwrap_or(0);
                let elapsed = sent.map_or(0, |at| now.saturating_since(at));
                let (eta_ms, overdue_ms) = (expected.saturating_sub(elapsed), elapsed.saturating_sub(expected));
                InFlight {
                    settlement: s.settlement.id.to_string(),
                    rail: s.settlement.rail.to_string(),
                    state: format!("{:?}", s.state).to_lowercase(),
                    payments: s.settlement.legs.len(),
                    eta_ms,
                    overdue_ms,
                }
            })
            .collect();
        in_flight.sort_by(|a, b| (&a.rail, &a.settlement).cmp(&(&b.rail, &b.settlement)));
        let mut anomalies_open: Vec<String> = m.flagged.iter().map(|(s, d)| format!("settlement {s}: {d:?}")).collect();
        anomalies_open.extend(lost.iter().map(|(s, rail)| format!("settlement {s} on {rail}: finality lost")));
        Ok(IncidentReport {
            since: since.0,
            until: now.0,
            rails,
            delayed,
            drains,
            in_flight,
            holds,
            held_now,
            anomalies_open,
            anomalies_resolved: restored,
            actions,
        })
    })
}

/// When a rail carries payments to finality again: the breaker's wait (or an operator's
/// resume), then its backlog at its rate, then its time to finality.
fn estimate(view: &crate::service::RailView, now: Timestamp) -> (Option<u64>, String) {
    if view.paused {
        return (None, "paused: no estimate until an operator resumes it".to_owned());
    }
    let wait = match view.breaker {
        router::BreakerState::Open { until } => until.saturating_since(now),
        _ => 0,
    };
    let backlog =
        u64::try_from(view.queued).unwrap_or(u64::MAX).saturating_mul(1_000) / u64::from(view.rate_per_second.max(1));
    let total = wait.saturating_add(backlog).saturating_add(view.finality_expected_ms);
    let text = format!(
        "about {} s: breaker wait {} ms + backlog of {} at {}/s ({} ms) + finality {} ms (assumes the next probe succeeds)",
        total / 1_000,
        wait,
        view.queued,
        view.rate_per_second,
        backlog,
        view.finality_expected_ms
    );
    (Some(total), text)
}

/// A Unix-milliseconds time as RFC 3339 in UTC.
fn utc(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn describe(event: &Event) -> (String, String, String) {
    match event {
        Event::RailPaused { rail, operator, reason, .. } => {
            (operator.clone(), format!("paused {rail}"), reason.clone())
        }
        Event::RailResumed { rail, operator, reason, .. } => {
            (operator.clone(), format!("resumed {rail}"), reason.clone())
        }
        Event::RailDrained { rail, moved, operator, reason, .. } => {
            (operator.clone(), format!("drained {rail} ({moved} moved)"), reason.clone())
        }
        Event::PaymentResolved { payment, resolution, operator, reason, .. } => {
            (operator.clone(), format!("resolved {payment}: {resolution:?}"), reason.clone())
        }
        Event::PoolFunded { rail, asset, amount, .. } => (
            "treasury".to_owned(),
            format!("funded {asset} on {rail} with {}", asset.format_amount(*amount)),
            String::new(),
        ),
        Event::PoolThresholdsSet { rail, asset, by, reason, .. } => {
            (by.clone(), format!("thresholds of {asset} on {rail}"), reason.clone())
        }
        Event::ClassSet { class, by, reason, .. } => (by.clone(), format!("class {class} changed"), reason.clone()),
        Event::RoutingRulesSet { rules, by, reason, .. } => {
            (by.clone(), format!("routing rules set ({})", rules.len()), reason.clone())
        }
        Event::ApiKeyCreated { role, by, .. } => (by.clone(), format!("{role} key created"), String::new()),
        Event::ApiKeyRevoked { by, reason, .. } => (by.clone(), "key revoked".to_owned(), reason.clone()),
        Event::WebhookEndpointSet { merchant, by, .. } => {
            (by.clone(), format!("webhook of merchant {merchant} set"), String::new())
        }
        Event::GuardsSet { merchant, policy, by, reason, .. } => {
            let what = if policy.is_some() { "set" } else { "removed" };
            (by.clone(), format!("guards of merchant {merchant} {what}"), reason.clone())
        }
        Event::PaymentApproved { payment, by, .. } => (by.clone(), format!("approved {payment}"), String::new()),
        Event::PaymentGuarded { payment, by, reason, .. } => {
            (by.clone(), format!("released part of the guard hold of {payment}"), reason.clone())
        }
        other => (String::new(), format!("{other:?}").chars().take(80).collect(), String::new()),
    }
}

impl IncidentReport {
    /// The report as Markdown, for the incident channel.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Incident report\n\nWindow: {} to {} (UTC).\n", utc(self.since), utc(self.until));
        let _ = writeln!(out, "## Affected rails\n");
        if self.rails.is_empty() {
            let _ = writeln!(out, "None.\n");
        }
        for rail in &self.rails {
            let _ = writeln!(out, "- **{}**: {}; {} queued now.", rail.rail, rail.signs.join("; "), rail.queued_now);
            let _ = writeln!(out, "  Recovery: {}.", rail.recovery);
        }
        let _ = writeln!(out, "\n## Delayed payments (held, or past their deadline)\n");
        let _ = writeln!(out, "| merchant | class | payments | amounts |\n| --- | --- | --- | --- |");
        for d in &self.delayed {
            let amounts: Vec<String> = d.amounts.iter().map(|(a, x)| format!("{x} {a}")).collect();
            let _ = writeln!(out, "| {} | {} | {} | {} |", d.merchant, d.class, d.payments, amounts.join(", "));
        }
        let _ = writeln!(out, "\n## Drained\n");
        for d in &self.drains {
            let _ = writeln!(out, "- {}: {} moved off {} by {} ({})", utc(d.at), d.moved, d.rail, d.by, d.reason);
        }
        let _ = writeln!(out, "\n## In flight\n");
        for f in &self.in_flight {
            let when = if f.overdue_ms > 0 {
                format!("{} s past its expected finality", f.overdue_ms / 1_000)
            } else {
                format!("final in about {} s", f.eta_ms / 1_000)
            };
            let _ = writeln!(
                out,
                "- settlement {} on {}: {}, {} payments, {when}",
                f.settlement, f.rail, f.state, f.payments
            );
        }
        let _ = writeln!(out, "\n## Holds\n\n{} held now. In the window, by reason:\n", self.held_now);
        for (reason, n) in &self.holds {
            let _ = writeln!(out, "- {n} × {reason}");
        }
        let _ = writeln!(out, "\n## Anomalies\n");
        for a in &self.anomalies_open {
            let _ = writeln!(out, "- open: {a}");
        }
        for a in &self.anomalies_resolved {
            let _ = writeln!(out, "- resolved: {a}");
        }
        let _ = writeln!(out, "\n## Actions\n");
        for a in &self.actions {
            let why = if a.reason.is_empty() { String::new() } else { format!(" — {}", a.reason) };
            let _ = writeln!(out, "- {} {}: {}{why}", utc(a.at), a.by, a.what);
        }
        out
    }
}
