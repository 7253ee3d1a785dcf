//! The engine as a service: one task owns the `Engine`; everything else talks to it through a
//! cloneable `EngineHandle` over a bounded channel of `Command`s, each with its own reply. A full
//! channel answers `Busy` at once (the API turns that into 429/503 with Retry-After); a stopped
//! or finished engine answers `Unavailable`.
//!
//! Queries that need no decision never wait for a tick: they read the `ReadModel` the task
//! publishes after every round (open payments and batches, counts, rails, pools, queue depths)
//! and, for finished work, the history store through the journal. The read model is updated
//! with what the round touched, so publishing costs what changed, not what exists; finished
//! work is committed to the history store before it leaves the read model, so a reader always
//! finds a payment in one or the other.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use journal::Journal;
use model::*;
use tokio::sync::{mpsc, oneshot};

use crate::guards::GuardActionError;
use crate::history::{self, BATCH, SETTLEMENT};
pub use crate::readmodel::{PolicyView, PoolView, RailView, ReadModel, SettledTotals};
use crate::{Draft, Engine, EngineError, Intake, IntakeError, OperatorError, Reconciliation};

/// Why a command did not reach the engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("the engine is busy: {0} commands are waiting; retry shortly")]
    Busy(usize),
    #[error("the engine is not running")]
    Unavailable,
}

type Reply<T> = oneshot::Sender<T>;

/// Everything the engine task can be asked to do. Closed: a new capability is a new variant.
#[derive(Debug)]
pub enum Command {
    Submit {
        merchant: MerchantId,
        key: String,
        drafts: Vec<Draft>,
        reply: Reply<Result<Intake, IntakeError>>,
    },
    FundPool {
        rail: RailId,
        asset: Asset,
        amount: Amount,
        transfer: u128,
        reply: Reply<Result<(), EngineError>>,
    },
    Pause {
        rail: RailId,
        operator: String,
        reason: String,
        reply: Reply<Result<(), OperatorError>>,
    },
    Resume {
        rail: RailId,
        operator: String,
        reason: String,
        reply: Reply<Result<(), OperatorError>>,
    },
    Drain {
        rail: RailId,
        dry_run: bool,
        operator: String,
        reason: String,
        reply: Reply<Result<queue::DrainReport, OperatorError>>,
    },
    Resolve {
        payment: PaymentId,
        resolution: Resolution,
        operator: String,
        reason: String,
        reply: Reply<Result<(), OperatorError>>,
    },
    Reconcile {
        reply: Reply<Result<Reconciliation, EngineError>>,
    },
    Acknowledge {
        ids: Vec<u128>,
        reply: Reply<Result<(), EngineError>>,
    },
    CreateKey {
        key: [u8; 32],
        role: Role,
        merchant: Option<MerchantId>,
        label: String,
        by: String,
        reply: Reply<Result<(), EngineError>>,
    },
    RevokeKey {
        key: [u8; 32],
        by: String,
        reason: String,
        reply: Reply<Result<(), EngineError>>,
    },
    SetWebhook {
        merchant: MerchantId,
        url: Option<String>,
        by: String,
        reply: Reply<Result<(), EngineError>>,
    },
    Cancel {
        merchant: MerchantId,
        payment: PaymentId,
        by: String,
        reply: Reply<Result<(), OperatorError>>,
    },
    SetPoolThresholds {
        config: router::PoolConfig,
        by: String,
        reason: String,
        reply: Reply<Result<(), EngineError>>,
    },
    SetClass {
        class: ClassName,
        setting: crate::policy::ClassSetting,
        by: String,
        reason: String,
        reply: Reply<Result<(), EngineError>>,
    },
    SetRules {
        rules: Vec<Rule>,
        by: String,
        reason: String,
        reply: Reply<Result<(), EngineError>>,
    },
    Outbox {
        after: Option<u128>,
        limit: usize,
        reply: Reply<Vec<(u128, crate::state::Notice)>>,
    },
    Guard {
        action: GuardAction,
        by: String,
        role: Role,
        reason: String,
        reply: Reply<Result<(), GuardActionError>>,
    },
}

/// Treasury's guard actions (`Command::Guard`).
#[derive(Clone, Debug)]
pub enum GuardAction {
    Set { merchant: MerchantId, policy: Option<GuardPolicy> },
    Approve { payment: PaymentId },
    Release { payment: PaymentId },
    Reject { payment: PaymentId },
}

/// A cloneable handle to the engine task.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    read: Arc<RwLock<ReadModel>>,
    journal: Journal,
}

/// The receiving end, for `run`.
#[derive(Debug)]
pub struct Inbox {
    commands: mpsc::Receiver<Command>,
    read: Arc<RwLock<ReadModel>>,
}

/// How the service drives the engine.
pub struct ServiceConfig {
    /// The longest the task waits between rounds (it wakes earlier when the batcher or a command
    /// needs it).
    pub tick: Duration,
    /// The clock: the real one in production, a simulated one in tests.
    pub now: Box<dyn Fn() -> Timestamp + Send>,
    /// Runs before every round with its time (sandbox chains advance their blocks here).
    pub before_tick: Box<dyn FnMut(Timestamp) + Send>,
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig").field("tick", &self.tick).finish_non_exhaustive()
    }
}

/// A handle and its inbox, with room for `capacity` waiting commands.
pub fn channel(engine: &mut Engine, capacity: usize) -> (EngineHandle, Inbox) {
    let (handle, inbox) = unattached(capacity, engine.journal().clone());
    attach(engine, &inbox, Timestamp(0));
    (handle, inbox)
}

/// A handle and its inbox with no engine yet (`attach` one, then `run` it): a node whose
/// engine is reopened — promoted from standby, or after its database came back — keeps one
/// handle for its whole life. History queries read `journal`.
pub fn unattached(capacity: usize, journal: Journal) -> (EngineHandle, Inbox) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    let read = Arc::new(RwLock::new(ReadModel::default()));
    let handle = EngineHandle { commands: sender, read: Arc::clone(&read), journal };
    (handle, Inbox { commands: receiver, read })
}

/// Makes `engine` the one behind `inbox`: the read model is replaced, at once, by one built
/// from everything open in it (an open payment is not in the history store, so it must be in
/// the read model from the first publication on).
pub fn attach(engine: &mut Engine, inbox: &Inbox, now: Timestamp) {
    engine.track_changes = true;
    engine.touched.extend(engine.state.book.payments.keys().copied());
    engine.touched_batches.extend(engine.state.book.batches.keys().copied());
    engine.touched_settlements.extend(engine.state.book.settlements.keys().copied());
    let fresh = RwLock::new(ReadModel::default());
    engine.publish(&fresh, now, true);
    *inbox.read.write().expect("read model lock") = fresh.into_inner().expect("read model lock");
}

impl Inbox {
    /// While no engine is attached: commands waiting are dropped (each caller is answered
    /// `Unavailable`), and the read model says why.
    pub fn refuse_waiting(&mut self, why: &str) {
        while let Ok(command) = self.commands.try_recv() {
            drop(command);
        }
        self.read.write().expect("read model lock").stopped = Some(why.to_owned());
    }

    /// The read model, for the code that drives the engine.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.read.read().expect("read model lock"))
    }
}

macro_rules! ask {
    ($handle:expr, $variant:ident { $($field:ident),* }) => {{
        let (reply, answer) = oneshot::channel();
        $handle.send(Command::$variant { $($field,)* reply })?;
        answer.await.map_err(|_| ServiceError::Unavailable)
    }};
}

impl EngineHandle {
    fn send(&self, command: Command) -> Result<(), ServiceError> {
        self.commands.try_send(command).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ServiceError::Busy(self.commands.max_capacity()),
            mpsc::error::TrySendError::Closed(_) => ServiceError::Unavailable,
        })
    }

    pub async fn submit(
        &self,
        merchant: MerchantId,
        key: String,
        drafts: Vec<Draft>,
    ) -> Result<Result<Intake, IntakeError>, ServiceError> {
        ask!(self, Submit { merchant, key, drafts })
    }

    pub async fn fund_pool(
        &self,
        rail: RailId,
        asset: Asset,
        amount: Amount,
        transfer: u128,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, FundPool { rail, asset, amount, transfer })
    }

    pub async fn pause(
        &self,
        rail: RailId,
        operator: String,
        reason: String,
    ) -> Result<Result<(), OperatorError>, ServiceError> {
        ask!(self, Pause { rail, operator, reason })
    }

    pub async fn resume(
        &self,
        rail: RailId,
        operator: String,
        reason: String,
    ) -> Result<Result<(), OperatorError>, ServiceError> {
        ask!(self, Resume { rail, operator, reason })
    }

    pub async fn drain(
        &self,
        rail: RailId,
        dry_run: bool,
        operator: String,
        reason: String,
    ) -> Result<Result<queue::DrainReport, OperatorError>, ServiceError> {
        ask!(self, Drain { rail, dry_run, operator, reason })
    }

    pub async fn resolve(
        &self,
        payment: PaymentId,
        resolution: Resolution,
        operator: String,
        reason: String,
    ) -> Result<Result<(), OperatorError>, ServiceError> {
        ask!(self, Resolve { payment, resolution, operator, reason })
    }

    pub async fn reconcile(&self) -> Result<Result<Reconciliation, EngineError>, ServiceError> {
        ask!(self, Reconcile {})
    }

    pub async fn acknowledge(&self, ids: Vec<u128>) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, Acknowledge { ids })
    }

    pub async fn create_key(
        &self,
        key: [u8; 32],
        role: Role,
        merchant: Option<MerchantId>,
        label: String,
        by: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, CreateKey { key, role, merchant, label, by })
    }

    pub async fn revoke_key(
        &self,
        key: [u8; 32],
        by: String,
        reason: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, RevokeKey { key, by, reason })
    }

    pub async fn set_webhook(
        &self,
        merchant: MerchantId,
        url: Option<String>,
        by: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, SetWebhook { merchant, url, by })
    }

    pub async fn cancel(
        &self,
        merchant: MerchantId,
        payment: PaymentId,
        by: String,
    ) -> Result<Result<(), OperatorError>, ServiceError> {
        ask!(self, Cancel { merchant, payment, by })
    }

    pub async fn set_pool_thresholds(
        &self,
        config: router::PoolConfig,
        by: String,
        reason: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, SetPoolThresholds { config, by, reason })
    }

    pub async fn set_class(
        &self,
        class: ClassName,
        setting: crate::policy::ClassSetting,
        by: String,
        reason: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, SetClass { class, setting, by, reason })
    }

    /// A guard action by a staff key (`by`, its public id, and its role: the engine checks
    /// the role too).
    pub async fn guard(
        &self,
        action: GuardAction,
        by: String,
        role: Role,
        reason: String,
    ) -> Result<Result<(), GuardActionError>, ServiceError> {
        ask!(self, Guard { action, by, role, reason })
    }

    pub async fn set_rules(
        &self,
        rules: Vec<Rule>,
        by: String,
        reason: String,
    ) -> Result<Result<(), EngineError>, ServiceError> {
        ask!(self, SetRules { rules, by, reason })
    }

    /// Up to `limit` undelivered notices after `after`, in id order.
    pub async fn outbox(
        &self,
        after: Option<u128>,
        limit: usize,
    ) -> Result<Vec<(u128, crate::state::Notice)>, ServiceError> {
        ask!(self, Outbox { after, limit })
    }

    /// The journal (read-only uses: exports and reports).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// A page of the audit export (reads the whole journal: run it off the async threads).
    pub fn audit(&self, from: u64, all: bool, limit: usize) -> Result<crate::audit::AuditPage, EngineError> {
        crate::audit::export(&self.journal, from, all, limit)
    }

    /// A settlement, open (read model) or finished (history store).
    pub fn settlement(&self, id: SettlementId) -> Result<Option<SettlementRecord>, EngineError> {
        if let Some(record) = self.read(|m| m.settlements.get(&id).cloned()) {
            return Ok(Some(record));
        }
        self.finished_settlement(id)
    }

    /// A merchant's payments with this reference, open and finished, by id.
    pub fn payments_by_reference(&self, merchant: MerchantId, reference: &str) -> Result<Vec<PaymentId>, EngineError> {
        history::by_reference(&self.journal, merchant, reference)
    }

    /// Finished payments after `after` (by id), at most `limit`, examining at most `scan`
    /// records; returns them and the last id examined (the cursor to go on from).
    pub fn finished_payments(
        &self,
        after: Option<PaymentId>,
        limit: usize,
        scan: usize,
        keep: impl Fn(&PaymentRecord) -> bool,
    ) -> Result<(Vec<PaymentRecord>, Option<PaymentId>), EngineError> {
        history::finished_payments(&self.journal, after, limit, scan, keep)
    }

    /// Reads the latest published read model.
    pub fn read<T>(&self, f: impl FnOnce(&ReadModel) -> T) -> T {
        f(&self.read.read().expect("read model lock"))
    }

    /// A payment, open (read model) or finished (history store); never waits for the engine.
    pub fn payment(&self, id: PaymentId) -> Result<Option<PaymentRecord>, EngineError> {
        Ok(self.payments(&[id])?.pop().flatten())
    }

    /// Payments by id, in the order of `ids`: the open ones from the read model, the finished
    /// ones from the history store (one read per batch). A payment not in the published read
    /// model had finished before it was published, so the history store has it.
    pub fn payments(&self, ids: &[PaymentId]) -> Result<Vec<Option<PaymentRecord>>, EngineError> {
        let mut out: Vec<Option<PaymentRecord>> =
            self.read(|m| ids.iter().map(|id| m.payments.get(id).cloned()).collect());
        let missing: Vec<usize> = (0..ids.len()).filter(|&i| out[i].is_none()).collect();
        let wanted: Vec<PaymentId> = missing.iter().map(|&i| ids[i]).collect();
        for (i, record) in missing.into_iter().zip(history::finished_many(&self.journal, &wanted)?) {
            out[i] = record;
        }
        Ok(out)
    }

    /// A batch, open or finished; never waits for the engine.
    pub fn batch(&self, id: BatchId) -> Result<Option<BatchRecord>, EngineError> {
        if let Some(record) = self.read(|m| m.batches.get(&id).cloned()) {
            return Ok(Some(record));
        }
        self.journal.history(&history::key(BATCH, id.0))?.map(|bytes| history::decode(&bytes)).transpose()
    }

    /// What reconciliation last found wrong with a payment's settlement: a settled payment
    /// whose transaction left the chain reads "settled" in the history, and this says why it
    /// is not to be trusted.
    pub fn difference_of(&self, id: PaymentId) -> Result<Option<crate::Difference>, EngineError> {
        let Some(settlement) = self.payment(id)?.and_then(|p| p.settlement) else { return Ok(None) };
        Ok(self.read(|m| m.flagged.get(&settlement).cloned()))
    }

    /// A finished settlement from the history store.
    pub fn finished_settlement(&self, id: SettlementId) -> Result<Option<SettlementRecord>, EngineError> {
        self.journal.history(&history::key(SETTLEMENT, id.0))?.map(|bytes| history::decode(&bytes)).transpose()
    }
}

/// Runs the engine until `shutdown` resolves or every handle is gone: rounds on the clock,
/// commands as they come, the read model published after each. A stopped engine keeps
/// answering (every command gets `Stopped`) and runs no more rounds.
pub async fn run(
    engine: Engine,
    mut inbox: Inbox,
    mut config: ServiceConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Engine {
    run_attached(engine, &mut inbox, &mut config, shutdown).await
}

/// `run` on an inbox the caller keeps (to attach another engine after this one returns).
pub async fn run_attached(
    mut engine: Engine,
    inbox: &mut Inbox,
    config: &mut ServiceConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Engine {
    let now = (config.now)();
    engine.publish(&inbox.read, now, true);
    tokio::pin!(shutdown);
    let mut next_round = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            command = inbox.commands.recv() => {
                let Some(command) = command else { break };
                let (group, next) = crate::dispatch::gather(command, &mut inbox.commands);
                for work in [Some(group), next.map(|c| vec![c])].into_iter().flatten() {
                    // On a shared journal a command is decided in this node's turn (a standby
                    // takes only merchants' batches; it refuses the rest without one).
                    let submits = matches!(work[0], Command::Submit { .. });
                    // A round that is due runs with the batches waiting (`tick_admitting`): it
                    // decides while the writer makes them durable, and since commands are
                    // polled first, a steady stream of batches cannot hold rounds back.
                    let round = submits
                        && !engine.is_standby()
                        && engine.stopped().is_none()
                        && tokio::time::Instant::now() >= next_round;
                    let turn = engine.is_shared() && (!engine.is_standby() || submits);
                    if turn {
                        crate::turn::take(&mut engine).await;
                    }
                    let now = (config.now)();
                    if submits {
                        if round {
                            (config.before_tick)(now);
                        }
                        engine.admit_group(work, now, round).await;
                    } else {
                        for command in work {
                            engine.handle(command, (config.now)()).await;
                        }
                    }
                    if turn {
                        crate::turn::give(&mut engine).await;
                    }
                    engine.publish(&inbox.read, (config.now)(), round);
                    if round {
                        next_round = round_after(&engine, config.tick, now);
                    } else if tokio::time::Instant::now() >= next_round {
                        // Other commands are not admitted in a round: a due one runs between
                        // them, or a steady stream of them would hold rounds back for ever.
                        next_round = due_round(&mut engine, inbox, config).await;
                    }
                }
            }
            () = tokio::time::sleep_until(next_round) => next_round = due_round(&mut engine, inbox, config).await,
        }
    }
    engine
}

/// Runs the round that is due (none on a stopped engine), publishes, and says when the next is.
async fn due_round(engine: &mut Engine, inbox: &Inbox, config: &mut ServiceConfig) -> tokio::time::Instant {
    let now = (config.now)();
    if engine.stopped().is_none() {
        (config.before_tick)(now);
        // A standby's round only reads the journal: no turn.
        let turn = engine.is_shared() && !engine.is_standby();
        if turn {
            crate::turn::take(engine).await;
        }
        if let Err(error) = engine.tick(now).await {
            tracing::error!(%error, "round failed");
        }
        if turn {
            crate::turn::give(engine).await;
        }
    }
    engine.publish(&inbox.read, now, true);
    round_after(engine, config.tick, now)
}

/// When the round after one at `now` is due: when the engine next needs one, at most `tick` on.
fn round_after(engine: &Engine, tick: Duration, now: Timestamp) -> tokio::time::Instant {
    let wait = engine.next_wake().map_or(tick, |at| Duration::from_millis(at.saturating_since(now)).min(tick));
    tokio::time::Instant::now() + wait.max(Duration::from_millis(1))
}
