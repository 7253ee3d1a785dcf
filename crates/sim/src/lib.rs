//! railyard's deterministic simulator. One seed drives everything — the chains, the engine's
//! configuration, the merchants' batches, the faults, the operators and the crashes — and the
//! real engine (the code `railyard serve` runs) works through it on a simulated clock with a
//! real journal on disk. After every step the invariants in `check` are verified; a violation
//! names the seed, the step, the invariant and the last steps taken, and the same seed replays
//! it exactly.
//!
//! A step: the clock moves, the chains make their blocks, one action is drawn (a batch, a fault,
//! a restore, a crash, a journal failure armed, an operator action, or nothing), the engine
//! ticks, the webhook sender acknowledges what the outbox holds, and the invariants run. When
//! the schedule ends, every fault is lifted and the engine runs on until every payment is
//! settled, failed or held (liveness), within a bound.

mod check;
mod operate;
pub mod quality;
mod world;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use engine::{Engine, EngineError, Intake, IntakeError};
use model::*;
use rails::sandbox::Fault;

pub use check::Invariant;
use world::World;

/// How a run is shaped (the seed decides the rest).
#[derive(Clone, Debug)]
pub struct Options {
    /// Payments the merchants submit over the run.
    pub payments: u64,
    /// Steps of the schedule (faults happen only here).
    pub steps: u64,
    /// Steps allowed after the schedule for every payment to settle, fail or be held.
    pub liveness_steps: u64,
    pub faults: bool,
    pub crashes: bool,
    /// Reorgs deeper than a chain's `confirmations_final` (a final settlement undone).
    pub deep_reorgs: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { payments: 200, steps: 120, liveness_steps: 400, faults: true, crashes: true, deep_reorgs: false }
    }
}

/// What a run that kept every invariant did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub seed: u64,
    pub steps: u64,
    pub payments: u64,
    /// Payments by final state (settled, failed, held).
    pub outcomes: BTreeMap<String, u64>,
    pub faults: u64,
    pub crashes: u64,
    /// The engine state's hash at the end: two runs of one seed must agree on it.
    pub fingerprint: [u8; 32],
}

/// An invariant broken: everything needed to replay and read it.
#[derive(Clone, Debug)]
pub struct Violation {
    pub seed: u64,
    pub step: u64,
    pub invariant: Invariant,
    pub detail: String,
    /// The last steps taken, oldest first.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "seed {} step {}: invariant {} broken: {}", self.seed, self.step, self.invariant, self.detail)?;
        writeln!(f, "replay: railyard sim --seed {}", self.seed)?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What the simulator expects of an accepted payment.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub(crate) destination: Address,
    pub(crate) asset: Asset,
    pub(crate) amount: Amount,
}

const TRACE_KEPT: usize = 24;
/// Rounds of an operator resolving every hold once the faults are over.
const OPERATOR_ROUNDS: usize = 3;

struct Sim {
    seed: u64,
    options: Options,
    rng: fastrand::Rng,
    world: World,
    _dir: tempfile::TempDir,
    path: PathBuf,
    engine: Option<Engine>,
    now: Timestamp,
    step: u64,
    trace: VecDeque<String>,
    accepted: BTreeMap<PaymentId, Expected>,
    submitted: u64,
    journal_failure_armed: bool,
    faults: u64,
    crashes: u64,
    /// A chain the treasury took out of the configuration while the engine was down (it
    /// comes back at a later restart, and when the faults are lifted).
    removed: Option<usize>,
}

/// Runs one seed. The journal lives in a temporary directory removed afterwards.
pub async fn run(seed: u64, options: &Options) -> Result<Summary, Violation> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let world = World::new(seed, &mut rng);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.redb");
    let mut sim = Sim {
        seed,
        options: options.clone(),
        rng,
        world,
        _dir: dir,
        path,
        engine: None,
        now: world::T0,
        step: 0,
        trace: VecDeque::new(),
        accepted: BTreeMap::new(),
        submitted: 0,
        journal_failure_armed: false,
        faults: 0,
        crashes: 0,
        removed: None,
    };
    sim.open().await?;
    sim.fund().await?;
    for _ in 0..options.steps {
        sim.step += 1;
        sim.advance();
        sim.act().await?;
        sim.tick_and_check().await?;
    }
    sim.lift_faults().await?;
    for _ in 0..options.liveness_steps {
        if sim.submitted >= options.payments && sim.all_done()? {
            break;
        }
        sim.step += 1;
        sim.advance();
        if sim.submitted < options.payments {
            sim.submit().await?;
        }
        sim.tick_and_check().await?;
    }
    if !sim.all_done()? {
        return Err(sim.liveness_violation("the faults stopped"));
    }
    // Then the treasury tops up every pool and an operator acts on every hold: now every
    // payment must settle (or stay failed, if an operator failed it). A resumed settlement
    // may still die once (a cancel broadcast while it was stuck is mined when the nonce ahead
    // of it is), and a payment past its attempts is held again: the operator acts on holds
    // as they come, at most `OPERATOR_ROUNDS` times.
    for _ in 0..OPERATOR_ROUNDS {
        sim.clear_holds().await?;
        for _ in 0..options.liveness_steps {
            if sim.all_done()? {
                break;
            }
            sim.step += 1;
            sim.advance();
            sim.tick_and_check().await?;
        }
        if sim.all_final()? {
            break;
        }
    }
    if !sim.all_final()? {
        return Err(sim.liveness_violation("every pool was funded and every hold resolved"));
    }
    sim.finish()
}

impl Sim {
    fn engine(&mut self) -> &mut Engine {
        self.engine.as_mut().expect("the engine is open between steps")
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == TRACE_KEPT {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("step {} t+{}ms: {line}", self.step, self.now.0 - world::T0.0));
    }

    fn violation(&self, invariant: Invariant, detail: impl Into<String>) -> Violation {
        Violation {
            seed: self.seed,
            step: self.step,
            invariant,
            detail: detail.into(),
            trace: self.trace.iter().cloned().collect(),
        }
    }

    async fn open(&mut self) -> Result<(), Violation> {
        let opened = Engine::open(&self.path, self.config(), self.rails(), self.now).await;
        match opened {
            Ok(engine) => {
                self.engine = Some(engine);
                Ok(())
            }
            Err(error) => Err(self.violation(Invariant::Restarts, format!("the engine does not open: {error}"))),
        }
    }

    /// The configuration the engine opens with: the world's, less a rail taken out.
    fn config(&self) -> engine::EngineConfig {
        let mut config = self.world.config.clone();
        if let Some(chain) = self.removed {
            let rail = self.world.chains[chain].id;
            config.state.pools.retain(|p| p.rail != rail);
            config.state.fee_assets.remove(&rail);
        }
        config
    }

    fn rails(&self) -> Vec<std::sync::Arc<dyn rails::Rail>> {
        let mut rails = self.world.rails();
        if let Some(chain) = self.removed {
            rails.remove(chain);
        }
        rails
    }

    async fn fund(&mut self) -> Result<(), Violation> {
        let funding = self.world.funding.clone();
        let now = self.now;
        for (i, (rail, asset, amount)) in funding.into_iter().enumerate() {
            if let Err(error) = self.engine().fund_pool(rail, asset, amount, i as u128 + 1, now).await {
                return Err(self.violation(Invariant::EngineRuns, format!("funding {rail} {asset}: {error}")));
            }
        }
        Ok(())
    }

    fn advance(&mut self) {
        self.now = self.now.saturating_add_ms(self.rng.u64(250..=1_500));
        self.world.advance(self.now);
    }

    /// Draws and takes one action.
    async fn act(&mut self) -> Result<(), Violation> {
        let roll = self.rng.u8(0..100);
        match roll {
            0..30 if self.submitted < self.options.payments => self.submit().await,
            30..38 if self.options.faults => {
                self.inject();
                Ok(())
            }
            38..44 if self.options.faults => {
                let chain = self.rng.usize(0..self.world.chains.len());
                self.world.chains[chain].rail.inject(Fault::Restore);
                self.note(format!("{} restored", self.world.chains[chain].id));
                Ok(())
            }
            44..46 if self.options.crashes => self.crash().await,
            46 if self.options.crashes && !self.journal_failure_armed => {
                let after = self.rng.u64(0..3);
                self.engine().journal().fail_after(after);
                self.journal_failure_armed = true;
                self.note(format!("journal armed to fail after {after} more commits"));
                Ok(())
            }
            47..50 => self.operate_rail().await,
            50..56 => self.resolve_one().await,
            _ => Ok(()),
        }
    }

    async fn submit(&mut self) -> Result<(), Violation> {
        let count = self.rng.u64(1..=20).min(self.options.payments - self.submitted);
        let merchant = MerchantId(self.rng.u64(1..=world::MERCHANTS));
        let first = self.submitted;
        let drafts = world::batch(self.seed, first, count, &self.world, self.removed, &mut self.rng);
        let key = format!("batch-{first}");
        let now = self.now;
        let result = self.engine().submit(merchant, &key, &drafts, now).await;
        match result {
            Ok(Intake::Accepted { payments, .. }) => {
                for (id, draft) in payments.iter().zip(&drafts) {
                    let destination = Address::parse(&draft.destination, draft.networks[0])
                        .expect("the workload's destinations parse");
                    self.accepted.insert(*id, Expected { destination, asset: draft.asset, amount: draft.amount });
                }
                self.submitted += count;
                self.note(format!("merchant {} submitted {count} payments ({key})", merchant.0));
                Ok(())
            }
            Ok(Intake::Duplicate { .. }) => Err(self.violation(Invariant::Idempotency, format!("{key} is new"))),
            Err(IntakeError::Engine(EngineError::Stopped(reason))) => self.stopped(reason).await,
            Err(error) => Err(self.violation(Invariant::EngineRuns, format!("a valid batch was refused: {error}"))),
        }
    }

    fn inject(&mut self) {
        let chain = self.rng.usize(0..self.world.chains.len());
        // A reorg of `depth` replaces the last `depth` blocks; a transaction final at
        // `confirmations_final` survives one of at most `confirmations_final - 1`.
        let within = self.world.chains[chain].confirmations_final as usize - 1;
        let deepest = within + if self.options.deep_reorgs { 3 } else { 0 };
        let fault = match self.rng.u8(0..8) {
            7 => Fault::ForeignSpend,
            0 => Fault::Outage,
            1 => Fault::Stuck,
            2 => Fault::DropNext,
            3 => Fault::RevertNext,
            4 if deepest >= 1 => Fault::Reorg { depth: self.rng.usize(1..=deepest) },
            4 => Fault::DropNext,
            5 => Fault::RefuseBroadcasts,
            _ => Fault::FeeSpike { multiplier: self.rng.u64(2..=200) },
        };
        self.world.chains[chain].rail.inject(fault);
        self.faults += 1;
        self.note(format!("{}: {fault:?}", self.world.chains[chain].id));
    }

    /// The process dies between two steps (everything acknowledged is durable) and starts
    /// again from the journal.
    async fn crash(&mut self) -> Result<(), Violation> {
        let live = self.engine().state().clone();
        let staged = self.engine().staged().to_vec();
        self.engine = None;
        self.crashes += 1;
        self.note("crash; reopened from the journal".into());
        self.journal_failure_armed = false;
        // The state is the journal plus what was staged for the next commit (the outcomes of
        // the last broadcasts); a crash loses the staged part, and the engine reopens on the
        // journal alone, from its latest snapshot.
        let replayed = check::replay_from_scratch(&self.path, &self.config())
            .map_err(|error| self.violation(Invariant::ReplayHash, error))?;
        let mut expected = replayed.clone();
        for event in &staged {
            expected.apply(event).map_err(|e| self.violation(Invariant::ReplayHash, format!("a staged event: {e}")))?;
            expected.book.take_retired();
        }
        if let Some(part) = check::differs(&live, &expected) {
            return Err(
                self.violation(Invariant::ReplayHash, format!("journal plus staged events give another {part}"))
            );
        }
        let changed = self.while_down();
        let replayed = if changed {
            check::replay_from_scratch(&self.path, &self.config()).map_err(|error| {
                self.violation(Invariant::Restarts, format!("after a configuration change: {error}"))
            })?
        } else {
            replayed
        };
        self.open().await?;
        if self.engine().recovered_hash() != replayed.state_hash() {
            return Err(self.violation(Invariant::ReplayHash, "recovery from the snapshot differs from a full replay"));
        }
        self.check_acknowledged()
    }

    /// What happens while the engine is down: the chains go on (blocks, and with faults on,
    /// a reorg), and sometimes the treasury changes the configuration (a pool's minimum
    /// raised). Whether the configuration changed.
    fn while_down(&mut self) -> bool {
        if self.rng.u8(0..3) == 0 {
            self.now = self.now.saturating_add_ms(self.rng.u64(1_000..=20_000));
            self.world.advance(self.now);
            self.note("down for a while; the chains went on".into());
            let chain = self.rng.usize(0..self.world.chains.len());
            let within = self.world.chains[chain].confirmations_final as usize - 1;
            if self.options.faults && self.rng.bool() && within >= 1 {
                let depth = self.rng.usize(1..=within);
                self.world.chains[chain].rail.inject(Fault::Reorg { depth });
                if self.rng.bool() {
                    // ... and what the reorg put back in the mempool cannot be mined again.
                    let multiplier = self.rng.u64(2..=20);
                    self.world.chains[chain].rail.inject(Fault::FeeSpike { multiplier });
                    self.note(format!(
                        "{}: FeeSpike {{ multiplier: {multiplier} }} while down",
                        self.world.chains[chain].id
                    ));
                }
                self.faults += 1;
                self.note(format!("{}: Reorg {{ depth: {depth} }} while down", self.world.chains[chain].id));
            }
        }
        if self.rng.u8(0..8) == 0 {
            // The treasury takes a rail out of the configuration, or puts it back.
            let line = match self.removed.take() {
                Some(chain) => {
                    format!("while down, rail {} came back into the configuration", self.world.chains[chain].id)
                }
                None => {
                    let chain = self.rng.usize(0..self.world.chains.len());
                    self.removed = Some(chain);
                    format!("while down, rail {} was taken out of the configuration", self.world.chains[chain].id)
                }
            };
            self.note(line);
            return true;
        }
        if self.rng.u8(0..4) != 0 {
            return false;
        }
        let pools = &mut self.world.config.state.pools;
        let i = self.rng.usize(0..pools.len());
        let pool = &mut pools[i];
        let raised = pool.min.units().saturating_add(u128::from(self.rng.u64(1..=5_000_000))).min(pool.target.units());
        pool.min = Amount::new(raised);
        let line = format!("while down, the treasury raised pool {} {}'s minimum to {raised}", pool.rail, pool.asset);
        self.note(line);
        true
    }

    /// The engine stopped: allowed only after an injected journal failure, and then the
    /// operator restarts it.
    async fn stopped(&mut self, reason: String) -> Result<(), Violation> {
        if !self.journal_failure_armed {
            return Err(self.violation(Invariant::EngineRuns, format!("the engine stopped: {reason}")));
        }
        self.note(format!("engine stopped as injected ({reason}); restarted"));
        self.engine = None;
        self.crashes += 1;
        self.journal_failure_armed = false;
        self.open().await?;
        self.check_acknowledged()
    }

    async fn tick_and_check(&mut self) -> Result<(), Violation> {
        let now = self.now;
        match self.engine().tick(now).await {
            Ok(()) => {}
            Err(EngineError::Stopped(reason)) => return self.stopped(reason).await,
            Err(error) => return Err(self.violation(Invariant::EngineRuns, format!("tick: {error}"))),
        }
        if self.rng.u8(0..10) < 7 {
            let delivered: Vec<u128> = self.engine().state().outbox.keys().copied().collect();
            match self.engine().acknowledge(&delivered, now).await {
                Ok(()) => {}
                Err(EngineError::Stopped(reason)) => return self.stopped(reason).await,
                Err(error) => return Err(self.violation(Invariant::EngineRuns, format!("acknowledge: {error}"))),
            }
        }
        check::every_step(self)
    }

    fn finish(mut self) -> Result<Summary, Violation> {
        let outcomes = check::outcomes(&self)?;
        let fingerprint = self.engine().state().state_hash();
        Ok(Summary {
            seed: self.seed,
            steps: self.step,
            payments: self.accepted.len() as u64,
            outcomes,
            faults: self.faults,
            crashes: self.crashes,
            fingerprint,
        })
    }

    fn check_acknowledged(&mut self) -> Result<(), Violation> {
        let ids: Vec<PaymentId> = self.accepted.keys().copied().collect();
        for id in ids {
            match self.engine().payment(id) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(
                        self.violation(Invariant::Acknowledged, format!("payment {id} was accepted, then lost"))
                    );
                }
                Err(error) => return Err(self.violation(Invariant::Acknowledged, error.to_string())),
            }
        }
        Ok(())
    }
}
