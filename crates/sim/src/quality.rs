//! Routing quality: how well the real engine routes when rails go down, measured against two
//! references on the same workload and the same outage schedule.
//! - **railyard**: the engine as it runs in production: it learns of an outage from failing
//!   calls (its breakers), fails queued payments over, and comes back after probing.
//! - **oracle**: the same engine with an operator who knows the schedule in advance: each rail
//!   is paused (and its queue drained to the others) `ORACLE_LEAD_MS` before its outage, so
//!   nothing is sent into it, and resumed the moment it ends. It is the best this engine's
//!   routing could do with perfect foresight, not a global optimum.
//! - **naive**: the engine given only the cheapest rail, as a single-rail payout system is.
//!
//! Three sandbox rails differ in fee (a base fee per settlement plus a fee per payout) and in
//! speed. Merchants submit every second for `DURATION_MS`; a fifth of the payments are urgent
//! (due in 60 s), the rest due in 5 minutes. A payment is on time if the engine reports it
//! settled (final) by its deadline; the fees are what the chains charged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::{Draft, Engine, EngineConfig, Intake, StateConfig};
use model::*;
use queue::QueueConfig;
use rails::Rail;
use rails::sandbox::{Fault, SandboxConfig, SandboxRail};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};

use crate::world::{T0, destination, name};

/// How long merchants submit.
pub const DURATION_MS: u64 = 2_400_000;
/// How long after that the engine may finish (a payment still open then is late).
const DRAIN_MS: u64 = 600_000;
const TICK_MS: u64 = 1_000;
/// How far ahead of an outage the oracle pauses a rail: the batching window plus the
/// slowest rail's time to finality, with a margin.
const ORACLE_LEAD_MS: u64 = 20_000;
const URGENT_DUE_MS: u64 = 60_000;
const STANDARD_DUE_MS: u64 = 300_000;

/// The rails, cheapest first: (name, chain id, block time, blocks to final, fee per
/// settlement, fee per payout).
const RAILS: [(&str, u64, u64, u32, u128, u128); 3] = [
    ("base", 8453, 2_000, 2, 1_000, 200),
    ("optimism", 10, 1_000, 3, 1_500, 300),
    ("arbitrum", 42161, 1_000, 2, 3_000, 600),
];

/// A rail's node unreachable from `from_ms` to `to_ms` after the start.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub rail: usize,
    pub from_ms: u64,
    pub to_ms: u64,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    pub name: &'static str,
    pub outages: Vec<Outage>,
}

/// The fixed set of schedules the comparison runs.
pub fn schedules() -> Vec<Schedule> {
    let down = |rail, from_s: u64, to_s: u64| Outage { rail, from_ms: from_s * 1_000, to_ms: to_s * 1_000 };
    vec![
        Schedule { name: "calm", outages: vec![] },
        Schedule { name: "cheapest rail down 10 min", outages: vec![down(0, 600, 1_200)] },
        Schedule {
            name: "cheapest rail flapping",
            outages: (0..5).map(|i| down(0, 300 + i * 400, 360 + i * 400)).collect(),
        },
        Schedule { name: "two rails down", outages: vec![down(0, 600, 1_500), down(1, 900, 1_200)] },
        Schedule { name: "cheapest rail down from the start", outages: vec![down(0, 0, 1_200)] },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    Railyard,
    Oracle,
    Naive,
}

/// One strategy's result on one schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    pub payments: u64,
    pub on_time: u64,
    /// Fees the chains charged, in the fee asset's units.
    pub fees: u128,
}

impl Score {
    /// On-time payments per million.
    pub fn on_time_ppm(&self) -> u64 {
        ppm(u128::from(self.on_time), u128::from(self.payments))
    }
}

/// `num / den` in parts per million (integers only: the workspace allows no float arithmetic).
fn ppm(num: u128, den: u128) -> u64 {
    u64::try_from(num.saturating_mul(1_000_000) / den.max(1)).unwrap_or(u64::MAX)
}

/// A ratio in parts per million, printed as a decimal (1000000 is "1.000").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ratio(pub u64);

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1_000_000, self.0 % 1_000_000 / 1_000)
    }
}

#[derive(Clone, Debug)]
pub struct Comparison {
    pub schedule: &'static str,
    pub railyard: Score,
    pub oracle: Score,
    pub naive: Score,
}

impl Comparison {
    /// `score`'s on-time rate over the oracle's.
    pub fn on_time_vs_oracle(&self, score: &Score) -> Ratio {
        Ratio(ppm(
            u128::from(score.on_time) * u128::from(self.oracle.payments),
            u128::from(score.payments) * u128::from(self.oracle.on_time),
        ))
    }

    /// `score`'s fees over the oracle's.
    pub fn fees_vs_oracle(&self, score: &Score) -> Ratio {
        Ratio(ppm(score.fees, self.oracle.fees))
    }

    /// The goal: at least 98 % of the oracle's on-time rate at no more than 105 % of its fees.
    pub fn meets_goal(&self) -> bool {
        self.on_time_vs_oracle(&self.railyard) >= Ratio(980_000)
            && self.fees_vs_oracle(&self.railyard) <= Ratio(1_050_000)
    }
}

/// Runs the three strategies on `schedule` with `per_second` payments submitted each second.
pub async fn compare(schedule: &Schedule, per_second: u64) -> Result<Comparison, String> {
    Ok(Comparison {
        schedule: schedule.name,
        railyard: run(schedule, Strategy::Railyard, per_second).await?,
        oracle: run(schedule, Strategy::Oracle, per_second).await?,
        naive: run(schedule, Strategy::Naive, per_second).await?,
    })
}

fn sandbox(i: usize) -> Arc<SandboxRail> {
    let (rail, chain, block_time_ms, confirmations_final, fee, per_payout) = RAILS[i];
    let capabilities = Capabilities {
        rail: name(rail),
        network: Network::Evm(ChainId(chain)),
        fee_asset: Asset::ETH,
        assets: vec![Asset::USDC],
        amount_min: Amount::new(1),
        amount_max: Amount::new(10u128.pow(12)),
        batch_size_max: 50,
        confirmations_final,
        can_replace: true,
        finality_expected_ms: block_time_ms * u64::from(confirmations_final),
    };
    let config = SandboxConfig {
        capabilities,
        seed: 7_000 + i as u64,
        block_time_ms,
        fee: Amount::new(fee),
        fee_per_payout: Amount::new(per_payout),
        fee_cap: Amount::new(10u128.pow(9)),
    };
    Arc::new(SandboxRail::new(config, T0))
}

fn config(rails: &[RailId]) -> EngineConfig {
    let pools = rails
        .iter()
        .flat_map(|rail| {
            [Asset::USDC, Asset::ETH].map(|asset| PoolConfig {
                rail: *rail,
                asset,
                min: Amount::ZERO,
                target: Amount::new(10u128.pow(15)),
                max: Amount::new(10u128.pow(18)),
            })
        })
        .collect();
    let mut queue = QueueConfig::example();
    queue.merchant_limit = queue::Limit { per_second: 1_000, burst: 1_000 };
    queue.rail_limit = queue::Limit { per_second: 1_000, burst: 1_000 };
    EngineConfig {
        state: StateConfig {
            pools,
            fee_assets: rails.iter().map(|r| (*r, Asset::ETH)).collect(),
            urgent: vec![name("urgent")],
        },
        queue,
        weights: Weights::default(),
        rules: vec![],
        breaker: BreakerConfig {
            failures_to_open: 3,
            open_ms: 30_000,
            half_open_probes: 1,
            successes_to_close: 2,
            window: 32,
        },
        anomaly: AnomalyPolicy { stuck_after_ms: 60_000, bump_budget: 2, rebroadcasts_max: 5, attempts_max: 3 },
        journal: journal::Config::default(),
        batch_payments_max: 1_000,
        reconcile_interval_ms: 0,
        batching: router::BatchPolicy {
            windows_ms: BTreeMap::new(),
            window_default_ms: 5_000,
            immediate: vec![name("urgent")],
        },
        rail_timeout: Duration::from_secs(5),
        snapshot_every_bytes: 8 << 20,
        settlements_per_tick_max: 4,
        reconcile_settlements_max: 100,
        reconcile_balances: false,
        unroutable_hold_ms: 600_000,
        quote_refresh_ms: 60_000,
    }
}

async fn run(schedule: &Schedule, strategy: Strategy, per_second: u64) -> Result<Score, String> {
    let sandboxes: Vec<Arc<SandboxRail>> = (0..RAILS.len()).map(sandbox).collect();
    let used = if strategy == Strategy::Naive { 1 } else { RAILS.len() };
    let rails: Vec<Arc<dyn Rail>> = sandboxes.iter().take(used).map(|s| Arc::clone(s) as Arc<dyn Rail>).collect();
    let ids: Vec<RailId> = rails.iter().map(|r| r.capabilities().rail).collect();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut engine =
        Engine::open(&dir.path().join("journal.redb"), config(&ids), rails, T0).await.map_err(|e| e.to_string())?;
    for (i, rail) in ids.iter().enumerate() {
        for (j, asset) in [Asset::USDC, Asset::ETH].into_iter().enumerate() {
            let transfer = (i * 2 + j + 1) as u128;
            engine
                .fund_pool(*rail, asset, Amount::new(10u128.pow(15)), transfer, T0)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let networks: Vec<Network> = RAILS.iter().map(|r| Network::Evm(ChainId(r.1))).collect();
    let mut deadlines: BTreeMap<PaymentId, Timestamp> = BTreeMap::new();
    let mut on_time = 0u64;
    let mut next = 0u64;
    let mut elapsed = 0u64;
    while elapsed < DURATION_MS + DRAIN_MS {
        elapsed += TICK_MS;
        let now = T0.saturating_add_ms(elapsed);
        for outage in &schedule.outages {
            let rail = &sandboxes[outage.rail];
            if elapsed == outage.from_ms.max(TICK_MS) {
                rail.inject(Fault::Outage);
            }
            if elapsed == outage.to_ms {
                rail.inject(Fault::Restore);
            }
            if strategy == Strategy::Oracle && outage.rail < used {
                oracle(&mut engine, ids[outage.rail], outage, elapsed, now).await?;
            }
        }
        for sandbox in &sandboxes {
            sandbox.advance_to(now);
        }
        if elapsed <= DURATION_MS {
            let drafts: Vec<Draft> = (next..next + per_second).map(|i| draft(i, &networks, now)).collect();
            let merchant = MerchantId(next % 5 + 1);
            let key = format!("q-{next}");
            match engine.submit(merchant, &key, &drafts, now).await.map_err(|e| e.to_string())? {
                Intake::Accepted { payments, .. } => {
                    for (id, draft) in payments.iter().zip(&drafts) {
                        deadlines.insert(*id, draft.deadline.expect("every draft has a deadline"));
                    }
                }
                Intake::Duplicate { .. } => return Err(format!("{key} is new")),
            }
            next += per_second;
        }
        engine.tick(now).await.map_err(|e| e.to_string())?;
        let notices: Vec<(u128, PaymentId, PaymentState)> =
            engine.state().outbox.iter().map(|(id, n)| (*id, n.payment, n.state)).collect();
        for (_, payment, state) in &notices {
            if *state == PaymentState::Settled && deadlines.get(payment).is_some_and(|d| now <= *d) {
                on_time += 1;
            }
        }
        let delivered: Vec<u128> = notices.iter().map(|(id, _, _)| *id).collect();
        engine.acknowledge(&delivered, now).await.map_err(|e| e.to_string())?;
    }
    let fees = sandboxes.iter().map(|s| s.fees_paid().units()).sum();
    Ok(Score { payments: deadlines.len() as u64, on_time, fees })
}

/// The oracle's operator: pauses the rail (and drains its queue) `ORACLE_LEAD_MS` before
/// its outage, resumes it when the outage ends.
async fn oracle(
    engine: &mut Engine,
    rail: RailId,
    outage: &Outage,
    elapsed: u64,
    now: Timestamp,
) -> Result<(), String> {
    let pause_at = outage.from_ms.saturating_sub(ORACLE_LEAD_MS).max(TICK_MS);
    if elapsed == pause_at {
        engine.pause(rail, "oracle", "outage ahead", now).await.map_err(|e| e.to_string())?;
        engine.drain(rail, false, "oracle", "outage ahead", now).await.map_err(|e| e.to_string())?;
    }
    if elapsed == outage.to_ms {
        engine.resume_rail(rail, "oracle", "outage over", now).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draft(i: u64, networks: &[Network], now: Timestamp) -> Draft {
    let urgent = i.is_multiple_of(5);
    let due = if urgent { URGENT_DUE_MS } else { STANDARD_DUE_MS };
    Draft {
        reference: format!("quality-{i}"),
        amount: Amount::new(1_000 + u128::from(i % 9_973)),
        asset: Asset::USDC,
        destination: destination(0, i),
        networks: networks.to_vec(),
        class: name(if urgent { "urgent" } else { "standard" }),
        deadline: Some(now.saturating_add_ms(due)),
    }
}
