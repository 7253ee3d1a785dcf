//! The engine end to end at scale: 1,000,000 payments from 1,000 merchants in 4 classes, ETH
//! and USDC, over three sandbox rails, on virtual time (a tick is one block), from intake to
//! settled, with the real redb journal on disk. Merchants submit batches of 1,000 every tick
//! while earlier ones settle, as a steady service would see them (they reach the engine while
//! its round is due, and it admits them in that round, `Engine::tick_admitting`, as
//! `railyard serve`'s command loop does), and hold back while 30,000 of
//! theirs are unsettled (backpressure: intake above what the chains settle per block would
//! otherwise grow a backlog, and memory with it, for ever); a webhook sender is played by
//! acknowledging the outbox every tick. The sandbox chains run pruned (old transaction bodies
//! forgotten, no balances), so the memory measured is the engine's.
//!
//! Printed: resident bytes per active payment and intake alone (a backlog accepted, nothing
//! ticking, measured in a child process of its own so that its heap does not stay in the runs'
//! numbers); a run of
//! 100,000 and a run of 1,000,000 on fresh journals, each with payments/s, journal commits and
//! bytes per payment, where its wall time went (rounds with their batches, acknowledgements, and of it the
//! wait for durable commits; the merchants' own time building drafts is not counted) and
//! resident memory at points of the run, and the ratio of the two rates
//! (the cost of a payment must not grow with history); the idle tick with all of history
//! behind it; reopen time; and — the baseline, measured in the same run — the journal alone
//! appending the same records in the same number of commits: the engine's rate as a share.
//!
//! Run: `cargo bench -p benches --bench engine_e2e` (`RAILYARD_BENCH_PAYMENTS` to change the
//! scale, default 1,000,000; `RAILYARD_BENCH_CACHE_MIB` to change the journal's page cache from
//! its default; `RAILYARD_BENCH_PG=1` to run the engine, and the journal-alone baseline, on the
//! PostgreSQL journal of a throwaway cluster instead of redb, and a payments table with a SKIP
//! LOCKED worker as the baseline — `RAILYARD_BENCH_SKIP_LOCKED=1` runs that baseline beside a
//! redb run too; with `RAILYARD_BENCH_NODES=3`, three engines in this process share the work
//! as `railyard serve` nodes do: one coordinates, each drives one rail, batches go to each in
//! turn, and every call is made in the node's turn on the journal). The benchmark runs on
//! jemalloc with the purge timing of .cargo/config.toml, as `railyard` does.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Draft, Engine, EngineConfig, StateConfig, Submission};
use model::*;
use queue::QueueConfig;
use rails::Rail;
use rails::sandbox::{SandboxConfig, SandboxRail};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};

/// The allocator `railyard serve` runs on (see crates/railyard/src/main.rs), so the resident
/// memory printed is the service's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[path = "engine_e2e/nodes.rs"]
mod nodes;
#[path = "engine_e2e/skip_locked.rs"]
mod skip_locked;
use nodes::{cluster_url, journal_at, open_nodes, stop_cluster};
use skip_locked::skip_locked;

const BLOCK_MS: u64 = 1_000;
const T0: Timestamp = Timestamp(1_700_000_000_000);
const CHAINS: [(&str, u64); 3] = [("base", 8453), ("optimism", 10), ("arbitrum", 42161)];
const MERCHANTS: u64 = 1_000;
const BATCH: u64 = 1_000;
const BATCHES_PER_TICK: u64 = 10;
/// Merchants hold back while this many of their payments are not yet settled, as clients of a
/// service under load do (backpressure): the run measures a steady state, not a backlog that
/// grows without bound because intake outpaces what the chains settle per block.
const ACTIVE_MAX: u64 = 30_000;
const CLASSES: [&str; 4] = ["urgent", "payroll", "standard", "bulk"];

fn name(text: &str) -> Name {
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
        batch_size_max: 500,
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
    let rail = SandboxRail::new(config, T0);
    // The simulated chains would otherwise hold every payout and balance in this process:
    // pruned, what grows is the engine's, not the chains'.
    rail.prune(8);
    Arc::new(rail)
}

fn config() -> EngineConfig {
    let rails: Vec<RailId> = CHAINS.iter().map(|(r, _)| name(r)).collect();
    let pools = rails
        .iter()
        .flat_map(|r| {
            [Asset::USDC, Asset::ETH].map(|asset| PoolConfig {
                rail: *r,
                asset,
                min: Amount::ZERO,
                target: Amount::new(10u128.pow(20)),
                max: Amount::new(10u128.pow(30)),
            })
        })
        .collect();
    let state = StateConfig {
        pools,
        fee_assets: rails.iter().map(|r| (*r, Asset::ETH)).collect(),
        urgent: vec![name("urgent")],
    };
    let mut queue = QueueConfig::example();
    queue.capacity = 2_000_000;
    queue.capacity_per_merchant = 100_000;
    queue.merchant_limit = queue::Limit { per_second: 1_000_000, burst: 1_000_000 };
    queue.rail_limit = queue::Limit { per_second: 1_000_000, burst: 1_000_000 };
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
        anomaly: AnomalyPolicy { stuck_after_ms: 60_000, bump_budget: 2, rebroadcasts_max: 5, attempts_max: 3 },
        journal: match std::env::var("RAILYARD_BENCH_CACHE_MIB").ok().and_then(|v| v.parse::<usize>().ok()) {
            Some(mib) => journal::Config { cache_bytes: mib << 20, ..journal::Config::default() },
            None => journal::Config::default(),
        },
        batch_payments_max: 10_000,
        reconcile_interval_ms: 0,
        batching: router::BatchPolicy {
            windows_ms: BTreeMap::new(),
            window_default_ms: BLOCK_MS,
            immediate: vec![name("urgent")],
        },
        rail_timeout: Duration::from_secs(5),
        snapshot_every_bytes: 16 << 20,
        settlements_per_tick_max: 16,
        reconcile_settlements_max: 1_000,
        reconcile_balances: false,
        unroutable_hold_ms: 600_000,
        quote_refresh_ms: 60_000,
    }
}

fn drafts(batch: u64) -> Vec<Draft> {
    let networks: Vec<Network> = CHAINS.iter().map(|(_, c)| Network::Evm(ChainId(*c))).collect();
    (batch * BATCH..(batch + 1) * BATCH)
        .map(|i| {
            let hash = blake3::hash(&i.to_le_bytes());
            let hex: String = hash.as_bytes()[..20].iter().map(|b| format!("{b:02x}")).collect();
            Draft {
                reference: format!("inv-{i}"),
                amount: Amount::new(1_000 + u128::from(i % 997)),
                asset: if i % 5 == 0 { Asset::ETH } else { Asset::USDC },
                destination: format!("0x{hex}"),
                networks: networks.clone(),
                class: name(CLASSES[(i % 4) as usize]),
                deadline: None,
            }
        })
        .collect()
}

/// Resident anonymous memory (the process's own: heap and stacks; file pages the kernel caches
/// for the journal are not counted).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    };
    if std::env::var("RAILYARD_BENCH_RSS_DETAIL").is_ok() {
        eprintln!(
            "RssAnon {} kB RssFile {} kB RssShmem {} kB",
            field("RssAnon:"),
            field("RssFile:"),
            field("RssShmem:")
        );
    }
    field("RssAnon:") * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

struct Run {
    engine: Engine,
    sandboxes: Vec<Arc<SandboxRail>>,
    now: Timestamp,
    submitted: u64,
    /// Wall time in merchants' submits outside rounds, in rounds (with the batches admitted in
    /// them), and in acknowledging the outbox.
    spent: [Duration; 3],
    /// Wall time the merchants took to build their drafts (taken out of the engine's time).
    merchants: Duration,
    /// The other nodes sharing the PostgreSQL journal (`RAILYARD_BENCH_NODES`), in this
    /// process, each driving its rails (`engine` coordinates): their time counts as the run's.
    others: Vec<Engine>,
}

impl Run {
    fn new(engine: Engine, sandboxes: Vec<Arc<SandboxRail>>, others: Vec<Engine>) -> Run {
        let spent = [Duration::ZERO; 3];
        Run { engine, sandboxes, now: T0, submitted: 0, spent, merchants: Duration::ZERO, others }
    }

    /// A round at the next block. With `batches`, the merchants' batches of this tick reach the
    /// one node while its round is due, as concurrent merchants' requests reach `railyard
    /// serve`: its command loop admits them in the round (`Engine::tick_admitting`). Several
    /// nodes take them first, each batch at its node, then run their rounds in turn.
    async fn tick(&mut self, batches: u64) {
        let together = self.others.is_empty() && batches > 0;
        if !together && batches > 0 {
            self.submit(batches).await;
        }
        self.now = self.now.saturating_add_ms(BLOCK_MS);
        for s in &self.sandboxes {
            s.advance_to(self.now);
        }
        let group = if together { self.group(batches) } else { Vec::new() };
        let started = Instant::now();
        if together {
            let (answers, round) = self.engine.tick_admitting(&submissions(&group), self.now).await;
            for answer in answers {
                answer.unwrap();
            }
            round.unwrap();
            self.submitted += batches * BATCH;
        } else {
            // Every node's round in its turn (a node alone on its journal has no turns).
            for engine in std::iter::once(&mut self.engine).chain(self.others.iter_mut()) {
                engine.begin_turn().await.unwrap();
                engine.tick(self.now).await.unwrap();
                engine.end_turn().await.unwrap();
            }
        }
        self.spent[1] += started.elapsed();
        let started = Instant::now();
        let delivered: Vec<u128> = self.engine.state().outbox.keys().copied().collect();
        if !delivered.is_empty() {
            self.engine.begin_turn().await.unwrap();
            self.engine.acknowledge(&delivered, self.now).await.unwrap();
            self.engine.end_turn().await.unwrap();
        }
        self.spent[2] += started.elapsed();
    }

    /// The next `batches` merchants' batches (their time building them is the merchants').
    fn group(&mut self, batches: u64) -> Vec<(MerchantId, String, Vec<Draft>)> {
        let made = Instant::now();
        let first = self.submitted / BATCH;
        let group = (first..first + batches)
            .map(|b| (MerchantId(b % MERCHANTS + 1), format!("batch-{b}"), drafts(b)))
            .collect();
        self.merchants += made.elapsed();
        group
    }

    async fn submit(&mut self, batches: u64) {
        if self.others.is_empty() {
            return self.submit_group(batches).await;
        }
        for _ in 0..batches {
            let b = self.submitted / BATCH;
            let merchant = MerchantId(b % MERCHANTS + 1);
            // The merchants' side (building their drafts) is not the engine's time.
            let made = Instant::now();
            let drafts = drafts(b);
            self.merchants += made.elapsed();
            let started = Instant::now();
            // Sent to the nodes in turn: any node takes a batch.
            let node = usize::try_from(b).unwrap() % (1 + self.others.len());
            let engine = if node == 0 { &mut self.engine } else { &mut self.others[node - 1] };
            engine.begin_turn().await.unwrap();
            engine.submit(merchant, &format!("batch-{b}"), &drafts, self.now).await.unwrap();
            engine.end_turn().await.unwrap();
            self.spent[0] += started.elapsed();
            self.submitted += BATCH;
        }
    }

    /// The batches of one tick reach the one node together, as concurrent merchants' requests
    /// reach `railyard serve`: its command loop admits the ones waiting as one group.
    async fn submit_group(&mut self, batches: u64) {
        let group = self.group(batches);
        let started = Instant::now();
        for answer in self.engine.submit_many(&submissions(&group), self.now).await {
            answer.unwrap();
        }
        self.spent[0] += started.elapsed();
        self.submitted += batches * BATCH;
    }

    fn settled(&self) -> u64 {
        self.engine.state().book.count(PaymentState::Settled)
    }
}

/// A group of merchants' batches as the engine takes them.
fn submissions(group: &[(MerchantId, String, Vec<Draft>)]) -> Vec<Submission<'_>> {
    group.iter().map(|(merchant, key, drafts)| Submission { merchant: *merchant, key, drafts }).collect()
}

fn rails_of(sandboxes: &[Arc<SandboxRail>]) -> Vec<Arc<dyn Rail>> {
    sandboxes.iter().map(|s| Arc::clone(s) as Arc<dyn Rail>).collect()
}

async fn open(path: &std::path::Path, sandboxes: &[Arc<SandboxRail>], now: Timestamp) -> Engine {
    let config = config();
    let journal = journal_at(path, config.journal.clone());
    Engine::open_on(journal, config, rails_of(sandboxes), now).await.unwrap()
}

async fn fund(engine: &mut Engine) {
    for (i, (rail, _)) in CHAINS.iter().enumerate() {
        for (j, asset) in [Asset::USDC, Asset::ETH].into_iter().enumerate() {
            engine.fund_pool(name(rail), asset, Amount::new(10u128.pow(28)), (i * 10 + j) as u128, T0).await.unwrap();
        }
    }
}

/// The journal alone: `records` records of `bytes` payload bytes in all, in `commits` appends.
fn journal_alone(dir: &std::path::Path, records: u64, bytes: u64, commits: u64) -> Duration {
    let journal = journal_at(&dir.join("baseline.redb"), journal::Config::default());
    let per_commit = (records / commits.max(1)).max(1);
    let size = (bytes / records.max(1)).max(1) as usize;
    let started = Instant::now();
    let mut left = records;
    while left > 0 {
        let n = per_commit.min(left);
        let payloads: Vec<Vec<u8>> = (0..n).map(|i| vec![(i % 251) as u8; size]).collect();
        journal.append_batch(payloads).unwrap();
        left -= n;
    }
    started.elapsed()
}

/// What one steady run measured.
struct Measured {
    total: u64,
    elapsed: Duration,
    ticks: u64,
    /// Most payments accepted and not yet settled at once.
    active_peak: u64,
    commits: u64,
    records: u64,
    bytes: u64,
    /// (settled so far, wall time, resident bytes) at points of the run.
    marks: Vec<(u64, Duration, u64)>,
    /// Wall time in submits, ticks and acknowledgements, and of it waiting for commits.
    spent: [Duration; 3],
    commit_wait: Duration,
}

/// Opens a fresh journal in `dir`, then merchants submit `total` payments, ten batches of
/// 1,000 a tick, until every one is settled.
async fn steady_run(dir: &std::path::Path, total: u64) -> (Run, Measured) {
    let sandboxes: Vec<Arc<SandboxRail>> =
        CHAINS.iter().enumerate().map(|(i, (r, c))| sandbox(r, *c, i as u64 + 1)).collect();
    let nodes: usize = std::env::var("RAILYARD_BENCH_NODES").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let (mut engine, others) = match cluster_url() {
        Some(_) if nodes > 1 => open_nodes(&dir.join("journal.redb"), &sandboxes, nodes).await,
        _ => (open(&dir.join("journal.redb"), &sandboxes, T0).await, Vec::new()),
    };
    engine.begin_turn().await.unwrap();
    fund(&mut engine).await;
    engine.end_turn().await.unwrap();
    let mut run = Run::new(engine, sandboxes, others);
    let points: Vec<u64> = [total / 100, total / 10, total / 2, total - total / 10, total].into_iter().collect();
    let mut marks = Vec::new();
    let commits_before = run.engine.commits();
    let wait_before = run.engine.commit_wait();
    let merchants_before = run.merchants;
    let tip_before = run.engine.journal().tip();
    let started = Instant::now();
    let mut ticks = 0u64;
    let mut active_peak = 0u64;
    while run.settled() < total {
        let active = run.submitted - run.settled();
        let mut batches = 0;
        if run.submitted < total && active < ACTIVE_MAX {
            let room = (ACTIVE_MAX - active).div_ceil(BATCH);
            batches = BATCHES_PER_TICK.min(room).min((total - run.submitted) / BATCH);
        }
        active_peak = active_peak.max(active + batches * BATCH);
        run.tick(batches).await;
        ticks += 1;
        let settled = run.settled();
        while marks.len() < points.len() && settled >= points[marks.len()] {
            marks.push((points[marks.len()], started.elapsed(), rss_bytes()));
        }
        assert!(ticks < total, "the run does not finish");
    }
    let elapsed = started.elapsed() - (run.merchants - merchants_before);
    let commits = run.engine.commits() - commits_before;
    let records = run.engine.journal().tip() - tip_before;
    let mut bytes = 0u64;
    let mut next = tip_before + 1;
    loop {
        // In small chunks: a whole 1 M-payment journal read at once would stay in the heap.
        let chunk = run.engine.journal().read_range(next, 1_000).unwrap();
        let Some(last) = chunk.last() else { break };
        next = last.seq + 1;
        bytes += chunk.iter().map(|r| r.payload.len() as u64).sum::<u64>();
    }
    let (spent, commit_wait) = (run.spent, run.engine.commit_wait() - wait_before);
    (run, Measured { total, elapsed, ticks, active_peak, commits, records, bytes, marks, spent, commit_wait })
}

fn rate(payments: u64, time: Duration) -> f64 {
    payments as f64 / time.as_secs_f64()
}

fn report(m: &Measured) {
    println!(
        "  {:>8} payments: {:>8.0} payments/s intake to settled ({:.1} s, {} ticks, at most {} active); {:.4} commits and {:.0} journal bytes per payment",
        m.total,
        rate(m.total, m.elapsed),
        m.elapsed.as_secs_f64(),
        m.ticks,
        m.active_peak,
        m.commits as f64 / m.total as f64,
        m.bytes as f64 / m.total as f64
    );
    println!(
        "      wall time: submits alone {:.2} s, rounds (with the batches admitted in them) {:.2} s, acknowledgements {:.2} s; of it waiting for durable commits {:.2} s",
        m.spent[0].as_secs_f64(),
        m.spent[1].as_secs_f64(),
        m.spent[2].as_secs_f64(),
        m.commit_wait.as_secs_f64()
    );
    for (settled, at, rss) in &m.marks {
        println!("      at {settled:>8} settled: t = {:>6.1} s, resident {:>6.1} MiB", at.as_secs_f64(), mib(*rss));
    }
}

/// Set in the child process that measures the backlog.
const PART: &str = "RAILYARD_BENCH_PART";

/// Resident bytes per active payment: a backlog of `total / 5` (at most 200,000) accepted and
/// queued, nothing ticking.
async fn backlog(total: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sandboxes: Vec<Arc<SandboxRail>> =
        CHAINS.iter().enumerate().map(|(i, (r, c))| sandbox(r, *c, i as u64 + 1)).collect();
    let mut engine = open(&dir.path().join("journal.redb"), &sandboxes, T0).await;
    fund(&mut engine).await;
    let mut run = Run::new(engine, sandboxes, Vec::new());
    let backlog = (total / 5).clamp(BATCH, 200_000);
    let before = rss_bytes();
    // In the groups the steady run submits (a tick's worth at a time).
    for _ in 0..(backlog / BATCH).div_ceil(BATCHES_PER_TICK) {
        let left = backlog / BATCH - run.submitted / BATCH;
        run.submit(left.min(BATCHES_PER_TICK)).await;
    }
    let per_active = rss_bytes().saturating_sub(before) / backlog;
    println!("  resident bytes per active (accepted, queued) payment, {backlog} of them: {per_active}");
    println!("{INTAKE_ALONE}{:.0} payments/s (that backlog's submits, no rounds)", rate(backlog, run.spent[0]));
}

/// How the backlog's child process reports intake alone (the parent reads it back).
const INTAKE_ALONE: &str = "  railyard intake alone: ";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let total: u64 = std::env::var("RAILYARD_BENCH_PAYMENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let total = (total / BATCH).max(10) * BATCH;
    if std::env::var(PART).is_ok_and(|part| part == "backlog") {
        backlog(total).await;
        stop_cluster();
        return;
    }
    let small = total / 10;
    println!(
        "engine_e2e: {MERCHANTS} merchants, 4 classes, ETH+USDC, 3 sandbox rails, batches of {BATCH}, virtual time, journal on {}",
        if cluster_url().is_some() { "PostgreSQL" } else { "redb" }
    );

    // Active payments first, in a fresh process of their own (so that neither run's heap high
    // water skews the other): a backlog accepted and queued, nothing ticking.
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    let child = std::process::Command::new(exe)
        .env(PART, "backlog")
        .env("RAILYARD_BENCH_PAYMENTS", total.to_string())
        .output()
        .expect("the backlog measurement runs");
    let printed = String::from_utf8_lossy(&child.stdout).into_owned();
    print!("{printed}");
    assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));
    let intake_alone: f64 = printed
        .lines()
        .find_map(|line| line.strip_prefix(INTAKE_ALONE)?.split_whitespace().next()?.parse().ok())
        .expect("the backlog reports intake alone");

    // The full run first, so its resident memory at 1 % is this process's own (run after the
    // small one, that mark held the small run's heap high water and flattered the ratio).
    let dir = tempfile::tempdir().unwrap();
    let (mut run, m) = steady_run(dir.path(), total).await;
    let small_dir = tempfile::tempdir().unwrap();
    let (small_run, small_measured) = steady_run(small_dir.path(), small).await;
    drop(small_run);
    drop(small_dir);
    report(&small_measured);
    report(&m);
    println!(
        "  rate at {total} / rate at {small}: {:.2} (1.00: the cost of a payment does not grow with history)",
        rate(total, m.elapsed) / rate(small, small_measured.elapsed)
    );
    let at = |fraction: u64| m.marks.iter().find(|(s, _, _)| *s == fraction).map_or(0, |(_, _, rss)| *rss);
    println!(
        "  resident at {} settled / at {} settled: {:.2}",
        total,
        total / 100,
        at(total) as f64 / at(total / 100).max(1) as f64
    );

    println!("  engine footprint after the run: {:?}", run.engine.footprint());

    // Idle: nothing to do, all of history behind it.
    let idle_ticks = 1_000u32;
    let idle_started = Instant::now();
    for _ in 0..idle_ticks {
        run.tick(0).await;
    }
    let idle = idle_started.elapsed().as_secs_f64() * 1e6 / f64::from(idle_ticks);
    println!("  idle tick with {total} payments in history: {idle:.1} µs");

    let Run { engine, sandboxes, now, .. } = run;
    drop(engine);
    let reopen_started = Instant::now();
    let engine = open(&dir.path().join("journal.redb"), &sandboxes, now).await;
    println!("  reopen with {total} payments in history: {:.3} s", reopen_started.elapsed().as_secs_f64());
    drop(engine);

    let before_alone = rss_bytes();
    let alone = journal_alone(dir.path(), m.records, m.bytes, m.commits);
    println!(
        "  resident before / after the journal alone appended them: {:.1} / {:.1} MiB",
        mib(before_alone),
        mib(rss_bytes())
    );
    println!(
        "  baseline, the journal alone appending the same {} records ({} bytes) in {} commits: {:.2} s, {:.0} payments/s",
        m.records,
        m.bytes,
        m.commits,
        alone.as_secs_f64(),
        rate(total, alone)
    );
    println!("  engine rate / journal-alone rate: {:.2}", alone.as_secs_f64() / m.elapsed.as_secs_f64());
    let baseline = match cluster_url() {
        Some(url) => Some((url, None)),
        // On redb, a cluster of its own for the baseline when asked.
        None if std::env::var_os("RAILYARD_BENCH_SKIP_LOCKED").is_some() => {
            let cluster = journal_pg::cluster::Cluster::start();
            Some((cluster.url.clone(), Some(cluster)))
        }
        None => None,
    };
    if let Some((url, _cluster)) = baseline {
        let url = journal_pg::database(&url, "skip_locked").unwrap();
        // The `postgres` client blocks: on a thread of its own, not this runtime's.
        let (intake, settled) = std::thread::spawn(move || skip_locked(&url, total)).join().unwrap();
        println!(
            "  baseline, a PostgreSQL payments table with a SKIP LOCKED worker: intake {:.0} payments/s, intake to settled {:.0} payments/s",
            rate(total, intake),
            rate(total, settled)
        );
        println!(
            "  railyard / baseline: intake {:.2}, intake to settled {:.2}",
            intake_alone / rate(total, intake),
            rate(total, m.elapsed) / rate(total, settled)
        );
    } else {
        println!("  (RAILYARD_BENCH_SKIP_LOCKED=1 adds the PostgreSQL baseline)");
    }
    stop_cluster();
}
