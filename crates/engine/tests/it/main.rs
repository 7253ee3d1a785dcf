//! The engine end to end on sandbox rails: intake to settled for 10,000 payments, a rail outage
//! with failover, a restart mid-run, and bad input that changes nothing.

mod faults;
mod follower;
mod groups;
mod guards;
mod history;
mod liquidity;
mod partition;
mod report;
mod scenarios;
mod service;
mod turns;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use engine::*;
use model::*;
use queue::QueueConfig;
use rails::Rail;
use rails::sandbox::{Fault, SandboxConfig, SandboxRail};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};

pub(crate) const BLOCK_MS: u64 = 1_000;
/// Payments wait up to this long for company in a settlement.
const BATCH_WINDOW_MS: u64 = 2_000;
pub(crate) const T0: Timestamp = Timestamp(1_700_000_000_000);
const CHAINS: [(&str, u64); 3] = [("base", 8453), ("optimism", 10), ("arbitrum", 42161)];

pub(crate) fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

fn sandbox(rail: &str, chain: u64, seed: u64) -> Arc<SandboxRail> {
    let capabilities = Capabilities {
        rail: name(rail),
        network: Network::Evm(ChainId(chain)),
        fee_asset: Asset::ETH,
        assets: vec![Asset::ETH, Asset::USDC],
        amount_min: Amount::new(1),
        amount_max: Amount::new(10u128.pow(24)),
        batch_size_max: 100,
        confirmations_final: 2,
        can_replace: true,
        finality_expected_ms: 2 * BLOCK_MS,
    };
    let config = SandboxConfig {
        capabilities,
        seed,
        block_time_ms: BLOCK_MS,
        fee: Amount::new(1_000),
        fee_per_payout: Amount::ZERO,
        fee_cap: Amount::new(100_000),
    };
    Arc::new(SandboxRail::new(config, T0))
}

pub(crate) struct World {
    pub(crate) sandboxes: Vec<Arc<SandboxRail>>,
}

impl World {
    pub(crate) fn new() -> World {
        World { sandboxes: CHAINS.iter().enumerate().map(|(i, (r, c))| sandbox(r, *c, i as u64 + 1)).collect() }
    }

    pub(crate) fn rails(&self) -> Vec<Arc<dyn Rail>> {
        self.sandboxes.iter().map(|s| Arc::clone(s) as Arc<dyn Rail>).collect()
    }

    pub(crate) fn advance(&self, now: Timestamp) {
        for s in &self.sandboxes {
            s.advance_to(now);
        }
    }

    /// What `destination` received on every chain (chains record addresses in canonical form).
    pub(crate) fn received(&self, destination: &str, asset: Asset) -> u128 {
        let canonical = Address::parse(destination, Network::BASE).unwrap().to_string();
        self.sandboxes.iter().map(|s| s.balance_of(&canonical, asset).units()).sum()
    }
}

pub(crate) fn config() -> EngineConfig {
    let rails: Vec<RailId> = CHAINS.iter().map(|(r, _)| name(r)).collect();
    let pools = rails
        .iter()
        .flat_map(|r| {
            [Asset::USDC, Asset::ETH].map(|asset| PoolConfig {
                rail: *r,
                asset,
                min: Amount::ZERO,
                target: Amount::new(10u128.pow(15)),
                max: Amount::new(10u128.pow(24)),
            })
        })
        .collect();
    let state = StateConfig {
        pools,
        fee_assets: rails.iter().map(|r| (*r, Asset::ETH)).collect(),
        urgent: vec![name("urgent")],
    };
    let mut queue = QueueConfig::example();
    queue.merchant_limit = queue::Limit { per_second: 10_000, burst: 10_000 };
    queue.rail_limit = queue::Limit { per_second: 10_000, burst: 10_000 };
    EngineConfig {
        state,
        queue,
        weights: Weights::default(),
        rules: vec![],
        breaker: BreakerConfig {
            failures_to_open: 3,
            open_ms: 5_000,
            half_open_probes: 1,
            successes_to_close: 2,
            window: 32,
        },
        anomaly: AnomalyPolicy { stuck_after_ms: 20_000, bump_budget: 2, rebroadcasts_max: 5, attempts_max: 3 },
        journal: journal::Config::default(),
        batch_payments_max: 1_000,
        reconcile_interval_ms: 0,
        batching: router::BatchPolicy {
            windows_ms: BTreeMap::new(),
            window_default_ms: BATCH_WINDOW_MS,
            immediate: vec![name("urgent")],
        },
        rail_timeout: std::time::Duration::from_secs(5),
        snapshot_every_bytes: 8 << 20,
        settlements_per_tick_max: 1,
        reconcile_settlements_max: 1_000,
        reconcile_balances: true,
        unroutable_hold_ms: 600_000,
        quote_refresh_ms: 60_000,
    }
}

pub(crate) fn destination(i: u64) -> String {
    let hash = blake3::hash(&i.to_le_bytes());
    let hex: String = hash.as_bytes()[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

const CLASSES: [&str; 4] = ["urgent", "payroll", "standard", "bulk"];

pub(crate) fn drafts(start: u64, count: u64) -> Vec<Draft> {
    let networks: Vec<Network> = CHAINS.iter().map(|(_, c)| Network::Evm(ChainId(*c))).collect();
    (start..start + count)
        .map(|i| Draft {
            reference: format!("inv-{i}"),
            amount: Amount::new(1_000 + u128::from(i % 997)),
            asset: if i % 5 == 0 { Asset::ETH } else { Asset::USDC },
            destination: destination(i),
            networks: networks.clone(),
            class: name(CLASSES[(i % 4) as usize]),
            deadline: None,
        })
        .collect()
}

/// Opens the engine on `path`'s journal: the redb file, or — when `RAILYARD_TEST_PG` names a
/// PostgreSQL server (`scripts/test` runs this suite a second time so) — a database of its
/// own for that path on the server, through `journal_pg::PgStore`. Reopening the same path
/// reopens the same database: restarts are restarts on both stores.
pub(crate) async fn open_engine(
    path: &std::path::Path,
    config: EngineConfig,
    rails: Vec<Arc<dyn Rail>>,
    now: Timestamp,
) -> Result<Engine, EngineError> {
    let Ok(admin) = std::env::var("RAILYARD_TEST_PG") else {
        return Engine::open(path, config, rails, now).await;
    };
    let hash = blake3::hash(path.to_string_lossy().as_bytes());
    let name = format!("engine_{}", &hash.to_hex()[..16]);
    let url = journal_pg::database(&admin, &name).expect("a database for this journal");
    let store = journal_pg::PgStore::connect(&url).expect("the PostgreSQL store");
    let journal = journal::Journal::with_store(Arc::new(store), config.journal.clone())?;
    Engine::open_on(journal, config, rails, now).await
}

async fn open(path: &std::path::Path, world: &World, now: Timestamp) -> Engine {
    open_engine(path, config(), world.rails(), now).await.unwrap()
}

pub(crate) async fn fund(engine: &mut Engine, now: Timestamp) {
    for (i, (rail, _)) in CHAINS.iter().enumerate() {
        for (j, asset) in [Asset::USDC, Asset::ETH].into_iter().enumerate() {
            engine.fund_pool(name(rail), asset, Amount::new(10u128.pow(13)), (i * 10 + j) as u128, now).await.unwrap();
        }
    }
}

/// Submits `total` payments as batches of 500 spread over three merchants.
pub(crate) async fn submit_all(engine: &mut Engine, total: u64, now: Timestamp) -> Vec<Intake> {
    let mut out = Vec::new();
    for start in (0..total).step_by(500) {
        let merchant = start / 500 % 3 + 1;
        let key = format!("batch-{start}");
        out.push(engine.submit(MerchantId(merchant), &key, &drafts(start, 500), now).await.unwrap());
    }
    out
}

pub(crate) async fn run_until_done(
    engine: &mut Engine,
    world: &World,
    mut now: Timestamp,
    ticks_max: u64,
) -> Timestamp {
    for _ in 0..ticks_max {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        // One place per waiting payment, after every round of every scenario that runs here.
        engine.check_staging().unwrap();
        if engine.state().book.payments.values().all(|p| p.state.is_terminal()) {
            break;
        }
    }
    now
}

/// The reason of the last `PaymentHeld` the journal holds for `payment`.
pub(crate) fn held_reason(engine: &Engine, payment: PaymentId) -> Option<String> {
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    records.iter().rev().find_map(|r| match Event::decode(&r.payload).unwrap() {
        Event::PaymentHeld { payment: p, reason, .. } if p == payment => Some(reason),
        _ => None,
    })
}

pub(crate) fn check_paid_exactly_once(engine: &Engine, world: &World, total: u64) {
    let counts = engine.count_by_state();
    assert_eq!(counts.get("settled").map(|n| *n as u64), Some(total), "{counts:?}");
    for i in 0..total {
        let draft = &drafts(i, 1)[0];
        assert_eq!(
            world.received(&draft.destination, draft.asset),
            draft.amount.units(),
            "payment {i} paid exactly once"
        );
    }
    engine.state().pools.ledger().verify().unwrap();
    let settled: u128 = drafts(0, total).into_iter().filter(|d| d.asset == Asset::USDC).map(|d| d.amount.units()).sum();
    let paid_out =
        engine.state().pools.ledger().account_of(ledger::Owner::PaidOut, Asset::USDC).unwrap().balance.credits_posted;
    assert_eq!(paid_out.units(), settled, "the ledger's payouts equal what was settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_payments_settle_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = open(&dir.path().join("journal.redb"), &world, T0).await;
    fund(&mut engine, T0).await;
    let started = Instant::now();
    let total = 10_000;
    submit_all(&mut engine, total, T0).await;
    let end = run_until_done(&mut engine, &world, T0, 2_000).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{total} payments from intake to settled in {elapsed:?} wall clock ({:.0} payments/s), {} s of chain time, {} journal records",
        total as f64 / elapsed.as_secs_f64(),
        end.saturating_since(T0) / 1000,
        engine.journal().tip()
    );
    check_paid_exactly_once(&engine, &world, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rail_outage_fails_over_without_paying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = open(&dir.path().join("journal.redb"), &world, T0).await;
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 1_500, T0).await;
    let mut now = T0;
    for _ in 0..2 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    // The first rail goes dark with settlements in flight and payments queued for it.
    world.sandboxes[0].inject(Fault::Outage);
    for _ in 0..30 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        engine.check_staging().unwrap();
    }
    world.sandboxes[0].inject(Fault::Restore);
    assert!(engine.moved_by_failover() > 0, "queued payments moved off the dark rail");
    run_until_done(&mut engine, &world, now, 1_000).await;
    check_paid_exactly_once(&engine, &world, 1_500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_run_resumes_and_recognises_resubmitted_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut now = T0;
    let first = {
        let mut engine = open(&path, &world, now).await;
        fund(&mut engine, now).await;
        let first = submit_all(&mut engine, 2_000, now).await;
        for _ in 0..3 {
            now = now.saturating_add_ms(BLOCK_MS);
            world.advance(now);
            engine.tick(now).await.unwrap();
        }
        assert!(engine.count_by_state().len() > 1, "the run is mid-way: {:?}", engine.count_by_state());
        first
    };
    let mut engine = open(&path, &world, now).await;
    let again = submit_all(&mut engine, 2_000, now).await;
    for (before, after) in first.iter().zip(&again) {
        let (Intake::Accepted { batch, payments }, Intake::Duplicate { batch: b, payments: p }) = (before, after)
        else {
            panic!("expected a duplicate, got {after:?}");
        };
        assert_eq!((batch, payments), (b, p));
    }
    run_until_done(&mut engine, &world, now, 1_000).await;
    check_paid_exactly_once(&engine, &world, 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_rejected_whole_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = open(&dir.path().join("journal.redb"), &world, T0).await;
    let mut bad = drafts(0, 5);
    bad[1].destination = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".into(); // checksum typo
    bad[2].amount = Amount::ZERO;
    bad[3].class = name("vip");
    bad[4].asset = Asset::BTC;
    let tip = engine.journal().tip();
    let Err(IntakeError::Invalid(rows)) = engine.submit(MerchantId(1), "k", &bad, T0).await else {
        panic!("must be rejected")
    };
    let reasons: BTreeMap<usize, RowError> = rows.into_iter().map(|r| (r.row, r)).collect();
    assert_eq!(reasons.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    let expected = [
        (1, "destination", "invalid_destination", "EIP-55"),
        (2, "amount", "amount_not_positive", "greater than zero"),
        (3, "class", "unknown_class", "unknown priority class vip"),
        (4, "asset", "no_rail_for_asset", "no rail carries BTC"),
    ];
    for (row, field, code, message) in expected {
        let error = &reasons[&row];
        assert_eq!((error.field, error.code), (field, code), "row {row}");
        assert!(error.message.contains(message), "row {row}: {}", error.message);
    }
    assert_eq!(engine.journal().tip(), tip, "a rejected batch journals nothing");
    assert!(engine.state().book.payments.is_empty());
    assert!(matches!(engine.submit(MerchantId(1), "k", &[], T0).await, Err(IntakeError::BatchSize { count: 0, .. })));

    let good = drafts(0, 3);
    assert!(matches!(engine.submit(MerchantId(1), "k", &good, T0).await.unwrap(), Intake::Accepted { .. }));
    let conflict = engine.submit(MerchantId(1), "k", &good[..2], T0).await;
    assert!(matches!(conflict, Err(IntakeError::Conflict { .. })), "same key, different body: a conflict");
    assert!(
        matches!(engine.submit(MerchantId(2), "k", &good[..1], T0).await.unwrap(), Intake::Accepted { .. }),
        "keys are per merchant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_settled_payment_gets_one_notice_in_the_same_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut engine = open(&path, &world, T0).await;
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 500, T0).await;
    run_until_done(&mut engine, &world, T0, 500).await;
    let outbox = engine.state().outbox.clone();
    assert_eq!(outbox.len(), 500);
    assert!(outbox.values().all(|n| n.state == PaymentState::Settled));
    // In the journal, the notices directly follow the final settlement that caused them, one
    // per leg.
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    let events: Vec<Event> = records.iter().map(|r| Event::decode(&r.payload).unwrap()).collect();
    for (i, event) in events.iter().enumerate() {
        if let Event::SettlementFinal { settlement, .. } = event {
            let legs = engine.settlement(*settlement).unwrap().expect("in the history store").settlement.legs.len();
            let Event::Notifications { notices, .. } = &events[i + 1] else {
                panic!("notices follow the final event, found {:?}", events[i + 1])
            };
            assert_eq!(notices.len(), legs, "a notice per leg");
            assert!(notices.iter().all(|n| n.state == PaymentState::Settled));
        }
    }
    drop(engine);
    let engine = open(&path, &world, T0).await;
    assert_eq!(engine.state().outbox, outbox, "the outbox is rebuilt exactly, nothing lost or invented");
}

fn operator_events(engine: &Engine) -> Vec<Event> {
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    records
        .iter()
        .map(|r| Event::decode(&r.payload).unwrap())
        .filter(|e| {
            matches!(
                e,
                Event::RailPaused { .. }
                    | Event::RailResumed { .. }
                    | Event::RailDrained { .. }
                    | Event::PaymentResolved { .. }
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_drain_and_resume_a_rail_with_a_dry_run_first() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = open(&dir.path().join("journal.redb"), &world, T0).await;
    fund(&mut engine, T0).await;
    let base = name("base");
    // Route a backlog (rail limits make the queue hold it for a while).
    submit_all(&mut engine, 1_000, T0).await;
    engine.tick(T0).await.unwrap();
    // Settlements ever planned on base, from the journal (finished ones have left memory).
    let on_base = |engine: &Engine| {
        let records = engine.journal().read_range(1, 1_000_000).unwrap();
        records
            .iter()
            .filter(|r| {
                matches!(Event::decode(&r.payload).unwrap(), Event::SettlementPlanned { settlement, .. } if settlement.rail == base)
            })
            .count()
    };
    let before_pause = on_base(&engine);
    engine.pause(base, "alice", "base sequencer incident", T0).await.unwrap();
    assert!(matches!(engine.pause(base, "alice", "again", T0).await, Err(OperatorError::AlreadyPaused(_))));
    assert!(matches!(engine.pause(name("mars"), "alice", "x", T0).await, Err(OperatorError::UnknownRail(_))));

    let tip = engine.journal().tip();
    let dry = engine.drain(base, true, "alice", "preview", T0).await.unwrap();
    assert!(dry.op.is_none());
    assert_eq!(engine.journal().tip(), tip, "a dry run journals nothing");
    let real = engine.drain(base, false, "alice", "move the backlog", T0).await.unwrap();
    engine.check_staging().unwrap();
    assert_eq!(real.moves, dry.moves, "the dry run showed exactly what the drain did");
    assert!(!real.moves.is_empty() && real.moves.iter().all(|m| m.to != base), "the backlog moved off base");

    let mut now = T0;
    for _ in 0..40 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    assert_eq!(on_base(&engine), before_pause, "nothing new is planned on a paused rail");
    engine.resume_rail(base, "alice", "incident over", now).await.unwrap();
    assert!(matches!(engine.resume_rail(base, "alice", "again", now).await, Err(OperatorError::NotPaused(_))));
    run_until_done(&mut engine, &world, now, 500).await;
    check_paid_exactly_once(&engine, &world, 1_000);
    let audit = operator_events(&engine);
    assert!(
        matches!(&audit[0], Event::RailPaused { operator, reason, .. } if operator == "alice" && reason == "base sequencer incident")
    );
    assert!(matches!(&audit[1], Event::RailDrained { moved, .. } if *moved as usize == real.moves.len()));
    assert!(matches!(&audit[2], Event::RailResumed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resolve_held_payments() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.rebroadcasts_max = 0; // a single drop holds the settlement for the operator
    let mut engine = open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    for sandbox in &world.sandboxes {
        sandbox.inject(Fault::DropNext);
    }
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &drafts(0, 3), T0).await.unwrap() else {
        panic!()
    };
    let mut now = T0;
    for _ in 0..3 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    let held: Vec<PaymentId> = payments
        .iter()
        .copied()
        .filter(|p| {
            engine.state().book.payments.get(p).is_some_and(|r| r.state == PaymentState::Held { in_flight: true })
        })
        .collect();
    assert!(!held.is_empty(), "{:?}", engine.count_by_state());
    let first = held[0];
    let refused = engine.resolve(first, Resolution::Retry, "bob", "try again", now).await;
    assert!(matches!(refused, Err(OperatorError::CannotResolve { .. })), "a payment in flight cannot be queued again");
    for payment in &held {
        engine.resolve(*payment, Resolution::Resume, "bob", "the node lost it; send it again", now).await.unwrap();
    }
    run_until_done(&mut engine, &world, now, 100).await;
    check_paid_exactly_once(&engine, &world, 3);
    assert!(operator_events(&engine).iter().all(
        |e| matches!(e, Event::PaymentResolved { operator, resolution: Resolution::Resume, .. } if operator == "bob")
    ));
    assert!(matches!(
        engine.resolve(PaymentId(7), Resolution::Fail, "bob", "x", now).await,
        Err(OperatorError::UnknownPayment(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_finds_a_reorg_past_finality_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.reconcile_interval_ms = 10_000;
    let mut engine = open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 500, T0).await;
    let now = run_until_done(&mut engine, &world, T0, 500).await;
    let clean = engine.reconcile(now).await.unwrap();
    assert!(clean.differences.is_empty(), "{:?}", clean.differences);
    assert!(clean.settlements_checked > 0 && clean.destinations_checked == 500, "{clean:?}");
    assert!(engine.last_reconciliation().is_some(), "the timer ran it too");

    // A reorg deeper than finality on one chain: its recent blocks' payouts vanish.
    world.sandboxes[0].inject(Fault::Reorg { depth: 50 });
    let report = engine.reconcile(now).await.unwrap();
    assert!(
        report.differences.iter().any(|d| matches!(d, Difference::FinalNotOnChain { .. })),
        "{:?}",
        report.differences
    );
    assert!(
        report.differences.iter().any(|d| matches!(d, Difference::Shortfall { rail, .. } if *rail == name("base")))
    );
    assert!(report.differences.iter().all(|d| !matches!(d, Difference::DeadButPaid { .. })));
    // The difference is counted and shown on the settlement (and so its payments).
    assert!(engine.differences_found() >= 1);
    let reorged = report
        .differences
        .iter()
        .find_map(|d| match d {
            Difference::FinalNotOnChain { settlement, .. } => Some(*settlement),
            _ => None,
        })
        .unwrap();
    assert!(matches!(engine.flagged(reorged), Some(Difference::FinalNotOnChain { .. })));
}
