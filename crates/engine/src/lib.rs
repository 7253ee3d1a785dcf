//! railyard's engine: intake to finality. It wires the journal, the deterministic core (book,
//! pools, queue, router) and the rails, and keeps rule 2 by construction: every change is
//! applied to the in-memory state and staged; a round of decisions is appended to the journal
//! in one durable commit; only then do its effects (broadcasts) leave the process.
//!
//! The engine is driven by `tick(now)`: the caller owns time (a timer in production, the test
//! or the simulator otherwise). A tick watches open settlements, fails over, routes, plans and
//! signs, commits once, then broadcasts what it signed.
//!
//! Faults are states, not poison: bad input from a caller is an error with nothing changed,
//! a rail failure is a breaker outcome or a held payment. Only a journal failure or the
//! engine's own state refusing an event it built (a bug) stops the engine, and a stopped
//! engine does nothing more — every call answers `EngineError::Stopped` — until it is reopened
//! from the journal.
//!
//! The stages live in their own modules: `intake`, `routing` (failover, route, plan),
//! `settling` (sign and broadcast), `watching`, `recovery`, `operator`, `reconcile`.

mod access;
pub mod audit;
mod dispatch;
mod follower;
mod gate;
pub mod guards;
mod history;
mod intake;
mod operator;
mod partition;
mod parts;
pub mod policy;
mod quotes;
mod readmodel;
mod reconcile;
mod recovery;
pub mod report;
mod round;
mod routing;
pub mod service;
mod settling;
mod staging;
mod standby;
pub mod state;
pub mod stats;
mod turn;
mod watching;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use journal::{HistoryOp, Journal};
use model::*;
use queue::{Queue, QueueConfig};
use rails::Rail;
use router::{AnomalyPolicy, Breaker, BreakerConfig, Router, Rule, Weights};

pub use follower::Follower;
pub use intake::{Draft, Intake, IntakeError, RowError, Submission};
pub use operator::OperatorError;
pub use partition::Acting;
pub use reconcile::{Difference, Reconciliation};
pub use state::{EngineState, Replayed, StateConfig};

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub state: StateConfig,
    pub queue: QueueConfig,
    pub weights: Weights,
    pub rules: Vec<Rule>,
    pub breaker: BreakerConfig,
    pub anomaly: AnomalyPolicy,
    pub journal: journal::Config,
    /// Most payments in one submitted batch.
    pub batch_payments_max: usize,
    /// How often `tick` reconciles with the chains (0: only on demand).
    pub reconcile_interval_ms: u64,
    /// When a rail's dequeued payments become a settlement.
    pub batching: router::BatchPolicy,
    /// The longest the engine waits for one rail call (on top of the adapter's own timeout).
    pub rail_timeout: Duration,
    /// A snapshot of the state is written once this many bytes of records were journaled
    /// after the last one (0: never), so a restart replays at most about that much. Bytes,
    /// not records: one record may carry one payment's step or a thousand.
    pub snapshot_every_bytes: u64,
    /// Most settlements a rail plans in one tick (each of up to its `batch_size_max` payments).
    pub settlements_per_tick_max: usize,
    /// Most settlements one reconciliation run checks: the ones finished since the last run
    /// first, then a rolling window over the history store.
    pub reconcile_settlements_max: usize,
    /// Whether reconciliation also checks that every destination holds at least what railyard
    /// settled to it over all history. That needs a running total per destination, written
    /// with every final settlement (a random-key write per leg), and it only holds where
    /// destinations never spend (custodial accounts, test chains): a recipient who moves the
    /// money on reads as a shortfall. Off by default; each settlement's own transaction is
    /// checked either way.
    pub reconcile_balances: bool,
    /// A payment no rail can take (every rail ineligible: pools short, breakers open, limits)
    /// for this long is held with the reasons, and the merchant told.
    pub unroutable_hold_ms: u64,
    /// A rail not quoted for this long is quoted for a reference batch before routing, so
    /// the router compares rails by what they cost now (0: only settlements' own quotes).
    pub quote_refresh_ms: u64,
}

/// The most one payment can take in a journal record (a reference of 128 four-byte characters,
/// 16 metadata entries at their limits, eight networks, the address and the ids), rounded up.
pub const PAYMENT_ENCODED_MAX: usize = 24 << 10;

impl EngineConfig {
    /// Checks the limits against each other: any allowed batch must fit the journal (each
    /// payment in a record, the whole batch in one append).
    pub fn validate(&self) -> Result<(), EngineError> {
        let journal = &self.journal;
        if self.settlements_per_tick_max == 0 {
            return Err(EngineError::Config("settlements_per_tick_max must be at least 1".into()));
        }
        if self.batch_payments_max == 0 {
            return Err(EngineError::Config("batch_payments_max must be at least 1".into()));
        }
        if journal.record_bytes_max < PAYMENT_ENCODED_MAX + 1024 {
            return Err(EngineError::Config(format!(
                "the journal's record limit ({} bytes) must hold at least one payment ({} bytes)",
                journal.record_bytes_max,
                PAYMENT_ENCODED_MAX + 1024
            )));
        }
        // A batch is its header and continuation records (at most one per payment) plus one
        // queued event per payment, all in one append. With guards a row may become two
        // payments (a test payout split off), the test queued and the rest held (the hold, its
        // notice and the guard's record): six records a row at most.
        if self.batch_payments_max >= 1 << 31 {
            return Err(EngineError::Config("batch_payments_max must be below 2^31".into()));
        }
        let records = self.batch_payments_max.saturating_mul(6).saturating_add(1);
        if records > journal.append_records_max {
            return Err(EngineError::Config(format!(
                "batch_payments_max = {} needs up to {records} journal records in one append, but the journal allows {}; lower batch_payments_max",
                self.batch_payments_max, journal.append_records_max
            )));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] journal::JournalError),
    #[error("recovery: {0}")]
    Recover(#[from] journal::RecoverError),
    #[error("configuration: {0}")]
    Config(String),
    /// The caller's request was refused and changed nothing.
    #[error("refused, nothing changed: {0}")]
    Refused(String),
    #[error("the engine stopped and does nothing more until it is reopened from the journal: {0}")]
    Stopped(String),
    /// This node takes no commands: it stands by (follows the journal others write) or
    /// drives rails only; the coordinator takes them.
    #[error(
        "this node does not coordinate (it stands by or drives rails only): send commands to the node holding the coordinator lease"
    )]
    Standby,
    /// A money invariant does not hold in the state the journal gives: a bug, or a journal from
    /// a build that had one. The engine refuses to act on it.
    #[error("a money invariant does not hold: {0}")]
    Invariant(String),
}

/// What the engine remembers about a settlement it watches (not journaled: rebuilt from the
/// book after a restart, counters reset).
#[derive(Clone, Debug, Default)]
struct Watching {
    last_action_at: Timestamp,
    rebroadcasts: u32,
    seen_in_block: Option<[u8; 32]>,
    held: bool,
    /// The rail's last quote for a replacement was above its fee cap.
    fee_above_cap: bool,
    /// Broadcasts of a signed settlement the node refused in a row (it answered, and said
    /// no), and what it said last: past `rebroadcasts_max` the settlement is held.
    refusals: u32,
    last_refusal: Option<String>,
    /// Replacements (bumps, cancels) the rail could not build, in a row.
    replace_failures: u32,
}

/// Entries per in-memory structure (see `Engine::footprint`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    pub payments: usize,
    pub settlements: usize,
    pub batches: usize,
    pub unrouted: usize,
    pub queued: usize,
    pub batching: usize,
    pub watching: usize,
    pub outbox: usize,
    pub reservations: usize,
    pub ledger_transfers: usize,
}

/// Something that leaves the process, run only after the commit that records it.
#[derive(Clone, Debug)]
enum Effect {
    /// Send these signed bytes, then (in order, after it) its children; on success, journal
    /// that the settlement was broadcast.
    Broadcast { settlement: SettlementId, tx: SignedTx, children: Vec<SignedTx> },
    /// Send again the bytes of a final settlement a deep reorg took off its chain (it is no
    /// longer in the book: nothing is journaled of the outcome).
    Rebroadcast { rail: RailId, settlement: SettlementId, tx: SignedTx },
}

pub struct Engine {
    config: EngineConfig,
    journal: Journal,
    state: EngineState,
    staging: staging::Staging,
    router: Router,
    rails: Vec<Arc<dyn Rail>>,
    breakers: BTreeMap<RailId, Breaker>,
    watching: BTreeMap<SettlementId, Watching>,
    /// Events applied to the state but not yet durable; the next commit appends them.
    staged: Vec<Event>,
    /// Effects of staged events, run after the commit.
    effects: Vec<Effect>,
    /// History writes for what the staged events finished, committed with them.
    history: Vec<HistoryOp>,
    /// Payments the staged events finished: their history is written with the commit.
    #[allow(clippy::vec_box, reason = "the book's boxes, moved on without copying the records")]
    finished: Vec<Box<PaymentRecord>>,
    /// Where records are encoded before they are copied out at their exact size
    /// (`Event::encode_via`).
    encode_scratch: Vec<u8>,
    /// Appends handed to the journal's writer and not yet known durable (see `gate`). Empty
    /// whenever a public method returns.
    in_flight: gate::InFlight,
    /// Settlements finished since the last reconciliation (bounded: the oldest are left to the
    /// rolling window).
    reconcile_due: VecDeque<SettlementId>,
    /// Where the rolling reconciliation window over the history store continues.
    reconcile_cursor: Option<Vec<u8>>,
    /// Record bytes journaled since the last snapshot (the replayed tail's, after a restart).
    bytes_since_snapshot: u64,
    /// Whether a read model is attached (`service::channel`): then the payments and batches
    /// each event touches are noted for the next publication.
    track_changes: bool,
    touched: BTreeSet<PaymentId>,
    touched_batches: BTreeSet<BatchId>,
    touched_settlements: BTreeSet<SettlementId>,
    /// What settled per rail and asset since the engine opened (for metrics).
    settled_totals: BTreeMap<(RailId, Asset), readmodel::SettledTotals>,
    /// Bumped by every policy change, so the read model republishes classes and rules.
    policy_version: u64,
    /// The last routing decision of each open payment, in words (service mode only). Payments
    /// routed alike share one text.
    routes: std::collections::HashMap<PaymentId, Arc<str>>,
    /// When the read model's queue depths were last refreshed.
    depths_at: Timestamp,
    /// When queued payments were last checked against their class's age limit.
    stale_checked_at: Timestamp,
    guards_checked_at: Timestamp,
    /// Differences reconciliation found, in all runs since the engine opened.
    differences_found: u64,
    /// Settlements whose last check found a difference (bounded; a clean later check clears).
    flagged: BTreeMap<SettlementId, Difference>,
    /// Changes whenever `flagged` does (the read model copies it only then).
    flagged_version: u64,
    /// A reconciliation the timer started, running beside the engine.
    reconciling: Option<tokio::task::JoinHandle<Result<Reconciliation, EngineError>>>,
    stopped: Option<String>,
    settlements_made: u64,
    moved_by_failover: u64,
    commits: u64,
    /// Wall time spent waiting for journal commits to become durable.
    commit_wait: Duration,
    /// The state's hash as the journal rebuilt it at open, before recovery acted.
    recovered_hash: [u8; 32],
    /// Each rail's last fee quote: the fee per payout the router scores it by, and the most
    /// one settlement may cost (the router keeps that much of the fee asset in the pool
    /// before it chooses the rail).
    quotes: BTreeMap<RailId, quotes::Quoted>,
    next_reconcile: Timestamp,
    last_reconciliation: Option<Reconciliation>,
    /// Set on a standby node: it follows the journal another node writes (see `standby`).
    standby: Option<standby::Following>,
    /// On a node acting under a lease: whether the lease is still surely held. Checked before
    /// every round and every broadcast; `false` stops the engine.
    lease_guard: Option<LeaseGuard>,
    /// Several nodes append to this engine's journal: it decides and appends only in its
    /// turn, having applied what the others appended (see `turn`).
    shared: bool,
    in_turn: bool,
    /// On a shared engine, the last record its state holds (the journal's tip may be ahead
    /// between taking a turn and catching up).
    applied_seq: u64,
    /// Why the last turn could not be taken (the answer to what needed it).
    turn_refused: Option<String>,
    /// A standby journaling a merchant's batch (the one command it takes).
    admitting: bool,
    /// What this engine acts on, when it shares the work with other nodes (see `partition`).
    acting: Option<Acting>,
    /// A command is being handled (a node that does not coordinate refuses it).
    commanding: bool,
}

/// Whether the lease a node acts under is still surely its own.
pub type LeaseGuard = Box<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("journal", &self.journal)
            .field("rails", &self.rails.len())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

pub(crate) fn derived(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    u128::from_le_bytes(hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes"))
}

impl Engine {
    /// Opens the redb journal at `path`, rebuilds the state from it and resumes.
    pub async fn open(
        path: &std::path::Path,
        config: EngineConfig,
        rails: Vec<Arc<dyn Rail>>,
        now: Timestamp,
    ) -> Result<Engine, EngineError> {
        // A configuration refused creates no journal file.
        Engine::check(&config, &rails)?;
        let journal = Journal::open(path, config.journal.clone())?;
        Engine::open_on(journal, config, rails, now).await
    }

    /// The configuration and the rails agree (checked before any journal is opened).
    fn check(config: &EngineConfig, rails: &[Arc<dyn Rail>]) -> Result<(), EngineError> {
        config.validate()?;
        for rail in rails {
            let caps = rail.capabilities();
            if caps.confirmations_final == 0 {
                return Err(EngineError::Config(format!(
                    "rail {}: confirmations_final must be at least 1 (a block must hold a settlement before it is final)",
                    caps.rail
                )));
            }
            if config.state.fee_assets.get(&caps.rail) != Some(&caps.fee_asset) {
                return Err(EngineError::Config(format!(
                    "rail {}: its fee asset must be listed in the state configuration",
                    caps.rail
                )));
            }
        }
        Ok(())
    }

    /// Rebuilds the state from `journal` (on any store: redb, PostgreSQL) and resumes.
    pub async fn open_on(
        journal: Journal,
        config: EngineConfig,
        rails: Vec<Arc<dyn Rail>>,
        now: Timestamp,
    ) -> Result<Engine, EngineError> {
        let (mut engine, _) = Engine::build(journal, config, rails, now)?;
        engine.resume(now).await?;
        Ok(engine)
    }

    /// The engine as the journal leaves it, before recovery acts; and the last record applied.
    fn build(
        journal: Journal,
        mut config: EngineConfig,
        rails: Vec<Arc<dyn Rail>>,
        now: Timestamp,
    ) -> Result<(Engine, u64), EngineError> {
        Engine::check(&config, &rails)?;
        let recovered = journal.recover_with::<Replayed>(&config.state)?;
        // Treasury's journaled changes win over the file.
        recovered.state.0.policy.apply_to(&mut config);
        let queue = Queue::new(config.queue.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        let router =
            Router::new(config.weights, config.rules.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        let breakers = rails.iter().map(|r| (r.capabilities().rail, Breaker::new(config.breaker))).collect();
        let batcher = router::Batcher::new(config.batching.clone());
        let state = recovered.state.0;
        // Checked in release builds too: never act on a ledger that does not balance.
        state.pools.ledger().verify().map_err(|e| EngineError::Invariant(format!("after recovery: {e}")))?;
        tracing::info!(
            tip = recovered.seq,
            snapshot = ?recovered.snapshot_seq,
            replayed = recovered.replayed,
            open_payments = state.book.payments.len(),
            "engine state recovered"
        );
        let staging = staging::Staging::new(queue, batcher, &state.book);
        let recovered_hash = state.state_hash();
        let engine = Engine {
            config,
            journal,
            state,
            staging,
            router,
            rails,
            breakers,
            watching: BTreeMap::new(),
            staged: Vec::new(),
            effects: Vec::new(),
            history: Vec::new(),
            finished: Vec::new(),
            encode_scratch: Vec::new(),
            reconcile_due: VecDeque::new(),
            reconcile_cursor: None,
            bytes_since_snapshot: recovered.replayed_bytes,
            reconciling: None,
            differences_found: 0,
            flagged: BTreeMap::new(),
            flagged_version: 0,
            track_changes: false,
            touched: BTreeSet::new(),
            touched_batches: BTreeSet::new(),
            touched_settlements: BTreeSet::new(),
            settled_totals: BTreeMap::new(),
            routes: std::collections::HashMap::new(),
            policy_version: 1,
            depths_at: Timestamp(0),
            stale_checked_at: Timestamp(0),
            guards_checked_at: Timestamp(0),
            stopped: None,
            settlements_made: 0,
            moved_by_failover: 0,
            commits: 0,
            commit_wait: Duration::ZERO,
            in_flight: gate::InFlight::default(),
            recovered_hash,
            quotes: BTreeMap::new(),
            next_reconcile: now,
            last_reconciliation: None,
            standby: None,
            lease_guard: None,
            shared: false,
            in_turn: false,
            applied_seq: recovered.seq,
            turn_refused: None,
            admitting: false,
            acting: None,
            commanding: false,
        };
        Ok((engine, recovered.seq))
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// The rails the engine drives.
    pub fn rails(&self) -> &[Arc<dyn Rail>] {
        &self.rails
    }

    /// Events applied to the state but not yet journaled: the outcomes of the last round's
    /// effects (a broadcast made), which go into the next commit. The state is always the
    /// journal's replay plus these.
    pub fn staged(&self) -> &[Event] {
        &self.staged
    }

    /// The state's hash as replaying the journal rebuilt it when the engine opened, before
    /// recovery acted: equal to the hash of the state the engine had when it last committed.
    pub fn recovered_hash(&self) -> [u8; 32] {
        self.recovered_hash
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Why the engine stopped, if it did.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Journal commits the engine made since it opened (one per tick that decided anything,
    /// one per accepted command).
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Wall time the engine has spent waiting for its commits to become durable (since it
    /// opened): the share of a round the journal costs.
    pub fn commit_wait(&self) -> Duration {
        self.commit_wait
    }

    /// When the engine next has something due without a command: the batcher's next window.
    pub fn next_wake(&self) -> Option<Timestamp> {
        self.staging.next_due()
    }

    /// The report of the last reconciliation the timer ran.
    pub fn last_reconciliation(&self) -> Option<&Reconciliation> {
        self.last_reconciliation.as_ref()
    }

    fn rail(&self, rail: RailId) -> Option<&Arc<dyn Rail>> {
        self.rails.iter().find(|r| r.capabilities().rail == rail)
    }

    fn rail_of(&self, id: SettlementId) -> Arc<dyn Rail> {
        let rail = self.state.book.settlements[&id].settlement.rail;
        Arc::clone(self.rail(rail).expect("settlements are on configured rails"))
    }

    /// Payments by state, for status views and tests (from the book's index, not a scan).
    pub fn count_by_state(&self) -> BTreeMap<String, usize> {
        self.state
            .book
            .counts()
            .iter()
            .map(|(state, n)| (state.to_string(), usize::try_from(*n).unwrap_or(usize::MAX)))
            .collect()
    }

    /// How much the engine holds in memory, structure by structure: all of it must follow
    /// active work, none of it history.
    pub fn footprint(&self) -> Footprint {
        let book = &self.state.book;
        Footprint {
            payments: book.payments.len(),
            settlements: book.settlements.len(),
            batches: book.batches.len(),
            unrouted: self.staging.sizes().0,
            queued: self.staging.sizes().1,
            batching: self.staging.sizes().2,
            watching: self.watching.len(),
            outbox: self.state.outbox.len(),
            reservations: self.state.pools.open_reservations(),
            ledger_transfers: self.state.pools.ledger().transfer_count(),
        }
    }

    /// Checks that every waiting payment is staged in exactly one place (see `staging`).
    pub fn check_staging(&self) -> Result<(), String> {
        self.staging.check(&self.state.book)
    }

    /// A rail's breaker at `now`, if the rail is configured.
    pub fn breaker(&self, rail: RailId, now: Timestamp) -> Option<router::BreakerState> {
        self.breakers.get(&rail).map(|b| b.state(now))
    }

    /// Payments moved to another rail by failover since the engine started.
    pub fn moved_by_failover(&self) -> u64 {
        self.moved_by_failover
    }
}

/// Runs one rail call under the engine's timeout; a call that does not answer in time is a
/// rail failure like any other.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, rails::RailError>>,
) -> Result<T, rails::RailError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(rails::RailError::Unavailable(format!("no answer within {timeout:?}"))),
    }
}
