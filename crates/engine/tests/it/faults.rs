//! Faults are states, not poison: a journal that fails stops the engine for good (no rail is
//! called again), bad commands are errors that change nothing, a batch of the largest allowed
//! size is journaled across records, and a tick makes one commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use engine::*;
use model::*;
use rails::sandbox::SandboxRail;
use rails::{Batch, FeeQuote, Health, Rail, RailError, Watch};

use super::{BLOCK_MS, T0, World, config, drafts, fund, name, run_until_done, submit_all};

/// A rail that counts every call that could reach a node, then does what the sandbox does —
/// or, while `hang` is set, never answers observe and broadcast (a node that hangs).
#[derive(Debug)]
pub(crate) struct Counting {
    pub(crate) inner: Arc<SandboxRail>,
    pub(crate) calls: Arc<AtomicU64>,
    pub(crate) hang: Arc<std::sync::atomic::AtomicBool>,
    /// Transactions this wrapper signed (builds, bumps, cancels).
    pub(crate) signs: Arc<AtomicU64>,
}

impl Counting {
    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    async fn maybe_hang(&self) {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl Rail for Counting {
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError> {
        self.count();
        self.inner.quote(batch).await
    }
    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.count();
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.inner.build(batch, fee).await
    }
    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError> {
        self.count();
        self.maybe_hang().await;
        self.inner.broadcast(tx).await
    }
    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError> {
        self.count();
        self.maybe_hang().await;
        self.inner.observe(watch).await
    }
    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.count();
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.inner.bump(batch, previous, fee).await
    }
    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.count();
        self.signs.fetch_add(1, Ordering::SeqCst);
        self.inner.cancel(previous, fee).await
    }
    async fn health(&self) -> Health {
        self.count();
        self.inner.health().await
    }
    async fn balance_of(&self, destination: &Address, asset: Asset) -> Result<Amount, RailError> {
        self.count();
        Rail::balance_of(self.inner.as_ref(), destination, asset).await
    }
    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError> {
        self.inner.recover_spends(spends)
    }
}

/// One hang switch per rail.
pub(crate) type Hangs = Vec<Arc<std::sync::atomic::AtomicBool>>;

/// The world's rails wrapped: one call counter for all, one hang switch per rail.
pub(crate) fn counting(world: &World) -> (Vec<Arc<dyn Rail>>, Arc<AtomicU64>, Hangs) {
    let calls = Arc::new(AtomicU64::new(0));
    let hangs: Hangs = world.sandboxes.iter().map(|_| Arc::new(std::sync::atomic::AtomicBool::new(false))).collect();
    let rails = world
        .sandboxes
        .iter()
        .zip(&hangs)
        .map(|(s, hang)| {
            let signs = Arc::new(AtomicU64::new(0));
            Arc::new(Counting { inner: Arc::clone(s), calls: Arc::clone(&calls), hang: Arc::clone(hang), signs })
                as Arc<dyn Rail>
        })
        .collect();
    (rails, calls, hangs)
}

/// The world's rails wrapped for one node, with a count per rail of what it signed there.
pub(crate) fn signing(world: &World) -> (Vec<Arc<dyn Rail>>, Vec<Arc<AtomicU64>>) {
    let calls = Arc::new(AtomicU64::new(0));
    let signs: Vec<Arc<AtomicU64>> = world.sandboxes.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
    let rails = world
        .sandboxes
        .iter()
        .zip(&signs)
        .map(|(s, signs)| {
            let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (inner, calls, signs) = (Arc::clone(s), Arc::clone(&calls), Arc::clone(signs));
            Arc::new(Counting { inner, calls, hang, signs }) as Arc<dyn Rail>
        })
        .collect();
    (rails, signs)
}

/// The journal fails on a commit in the middle of the run. The engine stops there: every later
/// tick and command answers `Stopped`, and no rail is called again — nothing the journal does
/// not know can leave the process. Reopened from the journal, it finishes the work and pays
/// everyone exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_engine_and_no_rail_is_called_after() {
    for fail_after in [0, 1, 3, 6] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let world = World::new();
        let (rails, calls, _) = counting(&world);
        let mut engine = super::open_engine(&path, config(), rails, T0).await.unwrap();
        fund(&mut engine, T0).await;
        submit_all(&mut engine, 1_000, T0).await;
        engine.journal().fail_after(fail_after);
        let mut now = T0;
        let mut failed_at = None;
        for tick in 0..30 {
            now = now.saturating_add_ms(BLOCK_MS);
            world.advance(now);
            match engine.tick(now).await {
                Ok(()) => {}
                Err(EngineError::Stopped(reason)) => {
                    assert!(reason.contains("injected"), "{reason}");
                    failed_at = Some(tick);
                    break;
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert!(failed_at.is_some(), "fail_after {fail_after}: the injected failure was reached");
        let calls_at_stop = calls.load(Ordering::SeqCst);
        for _ in 0..5 {
            now = now.saturating_add_ms(BLOCK_MS);
            world.advance(now);
            assert!(matches!(engine.tick(now).await, Err(EngineError::Stopped(_))));
        }
        let stopped = |e: &OperatorError| matches!(e, OperatorError::Engine(EngineError::Stopped(_)));
        assert!(stopped(&engine.pause(name("base"), "op", "x", now).await.unwrap_err()));
        assert!(stopped(&engine.drain(name("base"), true, "op", "x", now).await.unwrap_err()));
        assert!(stopped(&engine.resolve(PaymentId(1), Resolution::Fail, "op", "x", now).await.unwrap_err()));
        assert!(matches!(engine.reconcile(now).await, Err(EngineError::Stopped(_))));
        assert!(matches!(
            engine.fund_pool(name("base"), Asset::ETH, Amount::new(1), 99, now).await,
            Err(EngineError::Stopped(_))
        ));
        assert!(matches!(
            engine.submit(MerchantId(9), "late", &drafts(0, 1), now).await,
            Err(IntakeError::Engine(EngineError::Stopped(_)))
        ));
        assert_eq!(calls.load(Ordering::SeqCst), calls_at_stop, "fail_after {fail_after}: no rail call after the stop");
        drop(engine);

        let mut engine = super::open_engine(&path, config(), world.rails(), now).await.unwrap();
        run_until_done(&mut engine, &world, now, 1_000).await;
        super::check_paid_exactly_once(&engine, &world, 1_000);
    }
}

/// Bad treasury and operator commands are errors to their caller; the engine keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    engine.fund_pool(name("base"), Asset::USDC, Amount::new(10u128.pow(13)), 100, T0).await.unwrap();
    let tip = engine.journal().tip();
    let hash = engine.state().state_hash();
    let cases: Vec<(RailId, Asset, Amount, u128, &str)> = vec![
        (name("base"), Asset::USDC, Amount::ZERO, 102, "more than zero"),
        (name("mars"), Asset::USDC, Amount::new(5), 103, "no pool of USDC on rail mars"),
        (name("base"), Asset::BTC, Amount::new(5), 104, "no pool of BTC on rail base"),
        (name("base"), Asset::USDC, Amount::new(5), 100, "was already used for a different transfer"),
    ];
    for (rail, asset, amount, transfer, reason) in cases {
        let error = engine.fund_pool(rail, asset, amount, transfer, T0).await.unwrap_err();
        assert!(matches!(error, EngineError::Refused(_)), "{error}");
        assert!(error.to_string().contains(reason), "{error}");
        assert_eq!(engine.journal().tip(), tip, "a refused command journals nothing");
        assert_eq!(engine.state().state_hash(), hash, "a refused command changes nothing");
    }
    // The same transfer again is a no-op, not an error.
    engine.fund_pool(name("base"), Asset::USDC, Amount::new(10u128.pow(13)), 100, T0).await.unwrap();
    assert_eq!(engine.state().pools.available(name("base"), Asset::USDC), Amount::new(10u128.pow(13)));
    assert!(engine.stopped().is_none());
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 500, T0).await;
    // Operator commands on things that do not exist are refused the same way.
    assert!(matches!(engine.pause(name("mars"), "op", "x", T0).await, Err(OperatorError::UnknownRail(_))));
    assert!(matches!(
        engine.resolve(PaymentId(42), Resolution::Retry, "op", "x", T0).await,
        Err(OperatorError::UnknownPayment(_))
    ));
    run_until_done(&mut engine, &world, T0, 500).await;
    super::check_paid_exactly_once(&engine, &world, 500);
}

/// The largest batch the configuration allows is journaled (across several records of one
/// commit), replays to the same state, and a configuration whose batches cannot fit the
/// journal is refused when it loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_allowed_batch_is_journaled_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut cfg = config();
    cfg.batch_payments_max = 10_000;
    // Small records force the batch across many of them.
    cfg.journal.record_bytes_max = 64 << 10;
    let mut engine = super::open_engine(&path, cfg.clone(), world.rails(), T0).await.unwrap();
    let tip = engine.journal().tip();
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "big", &drafts(0, 10_000), T0).await.unwrap()
    else {
        panic!("accepted")
    };
    assert_eq!(payments.len(), 10_000);
    let records = engine.journal().read_range(tip + 1, 100_000).unwrap();
    let continuations =
        records.iter().filter(|r| matches!(Event::decode(&r.payload).unwrap(), Event::PaymentsAccepted { .. })).count();
    assert!(continuations >= 10, "the batch spans several records: {continuations} continuations");
    assert!(records.iter().all(|r| r.payload.len() <= 64 << 10));
    let hash = engine.state().state_hash();
    drop(engine);
    let engine = super::open_engine(&path, cfg.clone(), world.rails(), T0).await.unwrap();
    assert_eq!(engine.state().state_hash(), hash, "replay gives the same state");
    assert_eq!(engine.state().book.batches.values().next().unwrap().payments, payments);

    cfg.journal.append_records_max = 10_000;
    let error = super::open_engine(&dir.path().join("other.redb"), cfg, world.rails(), T0).await.unwrap_err();
    assert!(error.to_string().contains("lower batch_payments_max"), "{error}");
}

/// Each tick journals its decisions in at most one commit, before any of its broadcasts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_makes_at_most_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 2_000, T0).await;
    let mut now = T0;
    let mut ticks = 0u64;
    let commits_before = engine.commits();
    while !engine.state().book.is_quiet() {
        let before = engine.commits();
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        assert!(engine.commits() - before <= 1, "tick {ticks} made {} commits", engine.commits() - before);
        ticks += 1;
        assert!(ticks < 1_000, "settles");
    }
    let commits = engine.commits() - commits_before;
    eprintln!(
        "2,000 payments settled in {ticks} ticks with {commits} commits ({:.3} commits per payment)",
        commits as f64 / 2_000.0
    );
    super::check_paid_exactly_once(&engine, &world, 2_000);
}

/// A node that hangs delays no other rail: observations run concurrently, each under the rail
/// timeout, so in the very round where one rail's node never answers, the other rails' open
/// settlements are observed and move on, and the hanging rail's breaker records a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_node_delays_no_other_rail() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let (rails, _, hangs) = counting(&world);
    let mut cfg = config();
    cfg.rail_timeout = std::time::Duration::from_millis(200);
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, rails, T0).await.unwrap();
    fund(&mut engine, T0).await;
    // Half the payments may go only to base, half only to optimism.
    for (i, chain) in [8453u64, 10].into_iter().enumerate() {
        let mut batch = drafts(i as u64 * 750, 750);
        batch.iter_mut().for_each(|d| d.networks = vec![Network::Evm(ChainId(chain))]);
        engine.submit(MerchantId(1), &format!("k{i}"), &batch, T0).await.unwrap();
    }
    let mut now = T0;
    for _ in 0..2 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    let on_rail = |engine: &Engine, rail: &str| {
        engine.state().book.settlements.values().filter(|s| s.settlement.rail == name(rail)).count()
    };
    assert!(on_rail(&engine, "base") > 0 && on_rail(&engine, "optimism") > 0, "settlements open on both");
    let settled_before = engine.state().book.count(PaymentState::Settled);
    // base's node hangs from now on; the others keep going in the same rounds.
    hangs[0].store(true, Ordering::SeqCst);
    let mut rounds = 0;
    while on_rail(&engine, "optimism") > 0 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        rounds += 1;
        assert!(rounds < 30, "the other rails finish their open settlements");
    }
    assert!(engine.state().book.count(PaymentState::Settled) > settled_before);
    assert!(on_rail(&engine, "base") > 0, "base's settlements wait for its node, still watched");
    hangs[0].store(false, Ordering::SeqCst);
    run_until_done(&mut engine, &world, now, 1_000).await;
    super::check_paid_exactly_once(&engine, &world, 1_500);
}

/// A rail whose node is down when the engine opens starts with its breaker open: the engine
/// opens, the other rails carry the payments, and once the node answers again the rail is
/// probed back into service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rail_down_at_start_starts_with_its_breaker_open() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    world.sandboxes[0].inject(rails::sandbox::Fault::Outage);
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    assert!(matches!(engine.breaker(name("base"), T0), Some(router::BreakerState::Open { .. })));
    assert_eq!(engine.breaker(name("optimism"), T0), Some(router::BreakerState::Closed));
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 1_000, T0).await;
    let mut now = T0;
    for _ in 0..3 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    let on_base = engine.state().book.settlements.values().filter(|s| s.settlement.rail == name("base")).count();
    assert_eq!(on_base, 0, "nothing is planned on a rail whose node is down");
    assert!(!engine.state().book.settlements.is_empty(), "the other rails serve");
    world.sandboxes[0].inject(rails::sandbox::Fault::Restore);
    run_until_done(&mut engine, &world, now, 1_000).await;
    super::check_paid_exactly_once(&engine, &world, 1_000);
}

/// A payment queued past its class's age limit is held with that reason and a notice, leaves
/// the queue, and is settled once an operator retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_past_their_class_age_limit_are_held_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    // Urgent payments may wait 5 minutes in the queue; rails take one payment a second.
    cfg.queue.rail_limit = queue::Limit { per_second: 1, burst: 1 };
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    // All urgent, all for base only: base takes one a second, so half of them wait past 5
    // minutes.
    let mut batch = drafts(0, 600);
    batch.iter_mut().for_each(|d| {
        d.networks = vec![Network::BASE];
        d.class = name("urgent");
    });
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
        panic!("accepted")
    };
    let mut now = T0;
    for _ in 0..302 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    let held: Vec<PaymentId> = payments
        .iter()
        .copied()
        .filter(|p| {
            engine.state().book.payments.get(p).is_some_and(|r| r.state == PaymentState::Held { in_flight: false })
        })
        .collect();
    assert!(!held.is_empty(), "{:?}", engine.count_by_state());
    assert!(held.len() >= 200, "{} held", held.len());
    let notices: Vec<_> = engine.state().outbox.values().filter(|n| held.contains(&n.payment)).collect();
    assert_eq!(notices.len(), held.len(), "each hold is notified");
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    let reason = records.iter().find_map(|r| match Event::decode(&r.payload).unwrap() {
        Event::PaymentHeld { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(reason.unwrap().contains("age limit of 300000 ms"));

    let mut cfg = config();
    cfg.queue.rail_limit = queue::Limit { per_second: 10_000, burst: 10_000 };
    drop(engine);
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), now).await.unwrap();
    for id in &held {
        engine.resolve(*id, Resolution::Retry, "op", "capacity restored", now).await.unwrap();
    }
    run_until_done(&mut engine, &world, now, 1_000).await;
    assert_eq!(engine.state().book.count(PaymentState::Settled), 600);
}

/// A half-open breaker admits one probe settlement at a time, not the rail's full appetite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_rail_is_probed_with_one_settlement() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.settlements_per_tick_max = 8;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    // Only base may carry these.
    let mut batch = drafts(0, 2_000);
    batch.iter_mut().for_each(|d| d.networks = vec![Network::BASE]);
    world.sandboxes[0].inject(rails::sandbox::Fault::Outage);
    engine.submit(MerchantId(1), "k", &batch[..1_000], T0).await.unwrap();
    let mut now = T0;
    while !matches!(engine.breaker(name("base"), now), Some(router::BreakerState::Open { .. })) {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    world.sandboxes[0].inject(rails::sandbox::Fault::Restore);
    // Past the cool-down the breaker is half-open: the next round plans one settlement.
    now = now.saturating_add_ms(5_000);
    world.advance(now);
    assert_eq!(engine.breaker(name("base"), now), Some(router::BreakerState::HalfOpen));
    let before = engine.state().book.settlements.len();
    engine.tick(now).await.unwrap();
    let planned = engine.state().book.settlements.len() - before;
    assert_eq!(planned, 1, "one probe settlement while half-open");
    run_until_done(&mut engine, &world, now, 1_000).await;
    assert_eq!(engine.breaker(name("base"), now), Some(router::BreakerState::Closed));
    assert_eq!(engine.state().book.count(PaymentState::Settled), 1_000);
}
