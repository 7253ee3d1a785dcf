//! railyard's engine: intake to finality. It wires the journal, the deterministic core (book,
//! pools, queue, router) and the rails, and keeps rule 2 by construction: every change is
//! applied to the in-memory state and appended durably to the journal before anything outside
//! the process learns of it — before `submit` returns, before a transaction is broadcast. If
//! the journal fails, the engine refuses to go on (`EngineError::Poisoned`); a restart rebuilds
//! the state from the journal.
//!
//! The engine is driven by `tick(now)`: the caller owns time (a timer in production, the test
//! or the simulator otherwise).
//!
//! Recovery (`Engine::open`) replays the journal, then resumes every settlement where it stood:
//! signed-but-not-broadcast is broadcast with the same bytes, broadcast is watched, and
//! planned-but-not-signed is released (nothing was signed, so its payments are queued again).

pub mod config;
pub mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use journal::{Appended, Claim, Journal};
use model::*;
use queue::{Enqueue, Queue, QueueConfig};
use rails::{Batch, Payout, Rail, Watch};
use router::{
    Action, AnomalyPolicy, Breaker, BreakerConfig, Outcome, RailState, Router, Rule, SettlementWatch, Weights,
};

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
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] journal::JournalError),
    #[error("recovery: {0}")]
    Recover(#[from] journal::RecoverError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("the engine's state and journal may differ after a failure; restart it to recover: {0}")]
    Poisoned(String),
}

/// One payment as a merchant submits it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub reference: String,
    pub amount: Amount,
    pub asset: Asset,
    pub destination: String,
    pub networks: Vec<Network>,
    pub class: ClassName,
    pub deadline: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intake {
    Accepted {
        batch: BatchId,
        payments: Vec<PaymentId>,
    },
    /// The same key with the same body was accepted before: the original answer.
    Duplicate {
        batch: BatchId,
        payments: Vec<PaymentId>,
    },
}

/// One disagreement between the journal and a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Settled in the journal, but its transaction is not on chain at final depth now.
    FinalNotOnChain {
        settlement: SettlementId,
        observed: Observation,
    },
    /// Dead in the journal (reissued), yet a paying version is confirmed: a double payment.
    DeadButPaid {
        settlement: SettlementId,
        observed: Observation,
    },
    /// A destination holds less than railyard settled to it.
    Shortfall {
        rail: RailId,
        destination: Address,
        asset: Asset,
        expected: Amount,
        held: Amount,
    },
    Unreachable {
        rail: RailId,
        error: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub settlements_checked: usize,
    pub destinations_checked: usize,
    pub differences: Vec<Difference>,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no rail named {0}")]
    UnknownRail(RailId),
    #[error("rail {0} is already paused")]
    AlreadyPaused(RailId),
    #[error("rail {0} is not paused")]
    NotPaused(RailId),
    #[error("no payment {0}")]
    UnknownPayment(PaymentId),
    #[error(
        "payment {payment} is {state}: {resolution:?} does not apply (retry and fail are for held payments not in flight, resume for held payments in flight)"
    )]
    CannotResolve { payment: PaymentId, state: PaymentState, resolution: Resolution },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the batch is rejected whole: {} row(s) are invalid", .0.len())]
    Invalid(Vec<(usize, String)>),
    #[error("idempotency key already used for batch {batch} with a different body")]
    Conflict { batch: BatchId },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What the engine remembers about a settlement it watches (not journaled: rebuilt from the
/// book after a restart, counters reset).
#[derive(Clone, Debug, Default)]
struct Watching {
    last_action_at: Timestamp,
    rebroadcasts: u32,
    seen_in_block: Option<[u8; 32]>,
    held: bool,
}

pub struct Engine {
    config: EngineConfig,
    journal: Journal,
    state: EngineState,
    queue: Queue,
    router: Router,
    rails: Vec<Arc<dyn Rail>>,
    breakers: BTreeMap<RailId, Breaker>,
    watching: BTreeMap<SettlementId, Watching>,
    /// Payments in the queue or waiting in the batcher (Queued in the book, not to be routed).
    queued: BTreeSet<PaymentId>,
    batcher: router::Batcher,
    poisoned: Option<String>,
    settlements_made: u64,
    moved_by_failover: u64,
    next_reconcile: Timestamp,
    last_reconciliation: Option<Reconciliation>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("journal", &self.journal)
            .field("rails", &self.rails.len())
            .finish_non_exhaustive()
    }
}

fn derived(parts: &[&[u8]]) -> u128 {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    u128::from_le_bytes(hasher.finalize().as_bytes()[..16].try_into().expect("16 bytes"))
}

impl Engine {
    /// Opens the journal at `path`, rebuilds the state from it and resumes.
    pub async fn open(
        path: &std::path::Path,
        config: EngineConfig,
        rails: Vec<Arc<dyn Rail>>,
        now: Timestamp,
    ) -> Result<Engine, EngineError> {
        for rail in &rails {
            let caps = rail.capabilities();
            if config.state.fee_assets.get(&caps.rail) != Some(&caps.fee_asset) {
                return Err(EngineError::Config(format!(
                    "rail {}: its fee asset must be listed in the state configuration",
                    caps.rail
                )));
            }
        }
        let journal = Journal::open(path, config.journal.clone())?;
        let recovered = journal.recover_with::<Replayed>(&config.state)?;
        let queue = Queue::new(config.queue.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        let router =
            Router::new(config.weights, config.rules.clone()).map_err(|e| EngineError::Config(e.to_string()))?;
        let breakers = rails.iter().map(|r| (r.capabilities().rail, Breaker::new(config.breaker))).collect();
        let batcher = router::Batcher::new(config.batching.clone());
        let mut engine = Engine {
            config,
            journal,
            state: recovered.state.0,
            queue,
            router,
            rails,
            breakers,
            watching: BTreeMap::new(),
            queued: BTreeSet::new(),
            batcher,
            poisoned: None,
            settlements_made: 0,
            moved_by_failover: 0,
            next_reconcile: now,
            last_reconciliation: None,
        };
        engine.resume(now).await?;
        Ok(engine)
    }

    pub fn state(&self) -> &EngineState {
        &self.state
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Resumes after a restart: tells each rail what was signed on it (so no nonce or input is
    /// reused), re-broadcasts what was signed but maybe never sent (the same bytes), and
    /// releases settlements that were planned but never signed (their payments queue again).
    async fn resume(&mut self, now: Timestamp) -> Result<(), EngineError> {
        for rail in self.rails.clone() {
            let spends: Vec<Spend> = self
                .state
                .book
                .settlements
                .values()
                .filter(|r| r.settlement.rail == rail.capabilities().rail)
                .flat_map(|r| r.txs.iter().map(|t| t.spend.clone()))
                .collect();
            rail.recover_spends(&spends).map_err(|e| EngineError::Config(e.to_string()))?;
        }
        let signed: Vec<SettlementId> = self
            .state
            .book
            .settlements
            .iter()
            .filter(|(_, r)| r.state == SettlementState::Signed)
            .map(|(id, _)| *id)
            .collect();
        for id in signed {
            let rail = self.rail_of(id);
            let latest =
                self.state.book.settlements[&id].txs.last().expect("signed settlements have a transaction").clone();
            self.broadcast(&rail, id, &latest, now).await?;
        }
        let unsigned: Vec<SettlementId> = self
            .state
            .book
            .settlements
            .iter()
            .filter(|(_, r)| r.state == SettlementState::Planned)
            .map(|(id, _)| *id)
            .collect();
        let events: Vec<Event> =
            unsigned.into_iter().map(|settlement| Event::SettlementReleased { settlement, at: now }).collect();
        if !events.is_empty() {
            self.record(events).await?;
        }
        Ok(())
    }

    /// Applies events to the state, then appends them durably; only then may anything outside
    /// learn of them.
    async fn record(&mut self, events: Vec<Event>) -> Result<(), EngineError> {
        self.record_claimed(events, None).await.map(|_| ())
    }

    async fn record_claimed(&mut self, events: Vec<Event>, claim: Option<Claim>) -> Result<Appended, EngineError> {
        if let Some(reason) = &self.poisoned {
            return Err(EngineError::Poisoned(reason.clone()));
        }
        let events = self.with_notifications(events);
        for event in &events {
            if let Err(error) = self.state.apply(event) {
                // The engine built an event its own state refuses: a bug. Stop before it spreads.
                let reason = format!("state refused {event:?}: {error}");
                self.poisoned = Some(reason.clone());
                return Err(EngineError::Poisoned(reason));
            }
        }
        let payloads = events.iter().map(Event::encode).collect();
        let outcome = match self.journal.submit(payloads, claim) {
            Ok(ticket) => ticket.await,
            Err(error) => Err(error),
        };
        outcome.map_err(|error| {
            self.poisoned = Some(error.to_string());
            EngineError::Poisoned(error.to_string())
        })
    }

    /// Adds a notification for every payment these events make terminal, to be journaled in
    /// the same commit.
    fn with_notifications(&self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let terminal: Vec<(PaymentId, PaymentState)> = match &event {
                Event::SettlementFinal { settlement, .. } => self.state.book.settlements[settlement]
                    .settlement
                    .legs
                    .iter()
                    .map(|l| (l.payment, PaymentState::Settled))
                    .collect(),
                Event::PaymentFailed { payment, .. }
                | Event::PaymentResolved { payment, resolution: Resolution::Fail, .. } => {
                    vec![(*payment, PaymentState::Failed)]
                }
                _ => Vec::new(),
            };
            let at = event.at();
            out.push(event);
            for (payment, state) in terminal {
                let id = derived(&[b"notice", &payment.0.to_le_bytes(), state.to_string().as_bytes()]);
                out.push(Event::Notification { id, payment, state, at });
            }
        }
        out
    }

    fn rail_serves(&self, asset: Asset, networks: &[Network]) -> bool {
        self.rails
            .iter()
            .any(|r| r.capabilities().assets.contains(&asset) && networks.contains(&r.capabilities().network))
    }

    /// Accepts a merchant's batch whole, or rejects it whole with per-row reasons. The same
    /// key with the same body returns the original answer; with a different body, a conflict.
    pub async fn submit(
        &mut self,
        merchant: MerchantId,
        key: &str,
        body_hash: [u8; 32],
        drafts: &[Draft],
        now: Timestamp,
    ) -> Result<Intake, IntakeError> {
        let batch = BatchId(derived(&[b"batch", &merchant.0.to_le_bytes(), key.as_bytes()]));
        let ids: Vec<PaymentId> = (0..drafts.len() as u64)
            .map(|i| PaymentId(derived(&[b"payment", &batch.0.to_le_bytes(), &i.to_le_bytes()])))
            .collect();
        if let Some(entry) = self.journal.idempotency(&merchant.0.to_string(), key).map_err(EngineError::from)? {
            return if entry.body_hash == body_hash {
                let payments =
                    self.state.book.batches.get(&BatchId(entry.batch)).map(|b| b.payments.clone()).unwrap_or_default();
                Ok(Intake::Duplicate { batch: BatchId(entry.batch), payments })
            } else {
                Err(IntakeError::Conflict { batch: BatchId(entry.batch) })
            };
        }
        let payments = self.validate(batch, merchant, &ids, drafts)?;
        let mut events = vec![Event::BatchAccepted {
            batch,
            merchant,
            idempotency_key: key.to_owned(),
            body_hash,
            payments,
            at: now,
        }];
        events.extend(ids.iter().map(|payment| Event::PaymentQueued { payment: *payment, at: now }));
        let claim = Claim { merchant: merchant.0.to_string(), key: key.to_owned(), batch: batch.0, body_hash };
        match self.record_claimed(events, Some(claim)).await? {
            Appended::Committed { .. } => Ok(Intake::Accepted { batch, payments: ids }),
            Appended::Duplicate(_) => {
                let reason = "idempotency claim taken by another writer".to_owned();
                self.poisoned = Some(reason.clone());
                Err(EngineError::Poisoned(reason).into())
            }
        }
    }

    fn validate(
        &self,
        batch: BatchId,
        merchant: MerchantId,
        ids: &[PaymentId],
        drafts: &[Draft],
    ) -> Result<Vec<Payment>, IntakeError> {
        if drafts.is_empty() || drafts.len() > self.config.batch_payments_max {
            return Err(IntakeError::Invalid(vec![(
                0,
                format!("a batch carries 1 to {} payments", self.config.batch_payments_max),
            )]));
        }
        let mut errors = Vec::new();
        let mut payments = Vec::with_capacity(drafts.len());
        for (row, (draft, id)) in drafts.iter().zip(ids).enumerate() {
            let destination = match Address::parse_for(&draft.destination, &draft.networks) {
                Ok(address) => address,
                Err(error) => {
                    errors.push((row, format!("destination: {error}")));
                    continue;
                }
            };
            let payment = Payment {
                id: *id,
                batch,
                merchant,
                reference: draft.reference.clone(),
                amount: draft.amount,
                asset: draft.asset,
                destination,
                networks: draft.networks.clone(),
                class: draft.class,
                deadline: draft.deadline,
                metadata: BTreeMap::new(),
            };
            if let Err(error) = payment.validate() {
                errors.push((row, error.to_string()));
            } else if !self.config.queue.classes.iter().any(|c| c.name == draft.class) {
                errors.push((row, format!("unknown priority class {}", draft.class)));
            } else if !self.rail_serves(draft.asset, &draft.networks) {
                errors.push((row, format!("no rail carries {} on the allowed networks", draft.asset)));
            } else {
                payments.push(payment);
            }
        }
        if errors.is_empty() { Ok(payments) } else { Err(IntakeError::Invalid(errors)) }
    }

    /// Moves liquidity from the treasury into a rail's pool (journaled).
    pub async fn fund_pool(
        &mut self,
        rail: RailId,
        asset: Asset,
        amount: Amount,
        transfer: u128,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.record(vec![Event::PoolFunded { rail, asset, amount, transfer, at: now }]).await
    }

    /// One round of work at `now`: fail over, route and queue, plan and broadcast, watch and
    /// react.
    pub async fn tick(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.failover(now);
        self.route(now);
        for rail in self.rails.clone() {
            self.plan(&rail, now).await?;
        }
        self.watch_all(now).await?;
        if self.config.reconcile_interval_ms > 0 && now >= self.next_reconcile {
            self.next_reconcile = now.saturating_add_ms(self.config.reconcile_interval_ms);
            self.last_reconciliation = Some(self.reconcile().await);
        }
        Ok(())
    }

    /// The report of the last reconciliation the timer ran.
    pub fn last_reconciliation(&self) -> Option<&Reconciliation> {
        self.last_reconciliation.as_ref()
    }

    fn rail_states(&self, now: Timestamp) -> Vec<RailState<'_>> {
        rail_states(&self.rails, &self.breakers, &self.state.paused, now)
    }
}

/// What the router needs to know of each rail now. A paused rail looks like one whose breaker
/// is open: never chosen.
fn rail_states<'a>(
    rails: &'a [Arc<dyn Rail>],
    breakers: &BTreeMap<RailId, Breaker>,
    paused: &BTreeSet<RailId>,
    now: Timestamp,
) -> Vec<RailState<'a>> {
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
            RailState {
                capabilities: caps,
                breaker: state,
                fee_cost: 1,
                fee_reserve: Amount::ZERO,
                success_permille: breaker.success_permille(),
            }
        })
        .collect()
}

impl Engine {
    /// Payments queued for a rail whose breaker is open move to the next eligible rail (the
    /// router decides with that rail out); those with none stay. In-flight settlements are not
    /// touched: they stay watched on their rail.
    fn failover(&mut self, now: Timestamp) {
        let open: Vec<RailId> = self
            .breakers
            .iter()
            .filter(|(_, b)| matches!(b.state(now), router::BreakerState::Open { .. }))
            .map(|(rail, _)| *rail)
            .collect();
        for failed in open {
            // Waiting in the batcher for that rail: back to routing.
            for payment in self.batcher.take_rail(failed) {
                self.queued.remove(&payment);
            }
            let states = rail_states(&self.rails, &self.breakers, &self.state.paused, now);
            let (router, book, pools) = (&self.router, &self.state.book, &self.state.pools);
            let report = self.queue.drain(failed, now, false, |item| {
                let payment = &book.payments[&item.id].payment;
                router.decide(payment, item.deadline, &states, &|r, a| pools.available(r, a), now).chosen
            });
            self.moved_by_failover += report.moves.len() as u64;
        }
    }

    /// Payments moved to another rail by failover since the engine started.
    pub fn moved_by_failover(&self) -> u64 {
        self.moved_by_failover
    }

    /// Queued payments not yet in the queue get a rail and join it.
    fn route(&mut self, now: Timestamp) {
        let waiting: Vec<&PaymentRecord> = self
            .state
            .book
            .payments
            .values()
            .filter(|r| r.state == PaymentState::Queued && !self.queued.contains(&r.payment.id))
            .collect();
        if waiting.is_empty() {
            return;
        }
        let deadlines: Vec<(&Payment, Timestamp)> = waiting
            .iter()
            .map(|r| {
                let class = self.config.queue.classes.iter().find(|c| c.name == r.payment.class);
                let default = class.map_or(3_600_000, |c| c.deadline_default_ms);
                (&r.payment, r.payment.deadline.unwrap_or(now.saturating_add_ms(default)))
            })
            .collect();
        let states = self.rail_states(now);
        let pools = &self.state.pools;
        let decisions = self.router.decide_all(&deadlines, &states, &|r, a| pools.available(r, a), now);
        let mut by_rail: BTreeMap<RailId, Vec<Enqueue>> = BTreeMap::new();
        for ((payment, deadline), decision) in deadlines.iter().zip(&decisions) {
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
        for (_, batch) in by_rail {
            // A full queue leaves the rest in the book as Queued: they are routed next round.
            if self.queue.enqueue(&batch, now).is_ok() {
                self.queued.extend(batch.iter().map(|e| e.id));
            }
        }
    }

    async fn plan(&mut self, rail: &Arc<dyn Rail>, now: Timestamp) -> Result<(), EngineError> {
        let caps = rail.capabilities().clone();
        let breaker = self.breakers.get_mut(&caps.rail).expect("a breaker per rail");
        if matches!(breaker.state(now), router::BreakerState::Open { .. }) || self.state.paused.contains(&caps.rail) {
            return Ok(());
        }
        let dequeued = self.queue.dequeue(caps.rail, caps.batch_size_max, now, |_| true);
        for item in &dequeued.payments {
            let asset = self.state.book.payments[&item.id].payment.asset;
            // Still Queued in the book and still in `queued`: the batcher holds it now.
            self.batcher.add(caps.rail, asset, caps.batch_size_max, item.id, item.class, now);
        }
        let flushes: Vec<router::Flush> = self.batcher.flush_rail(caps.rail, now);
        for flush in flushes {
            let Some(rail) = self.rails.iter().find(|r| r.capabilities().rail == flush.rail).cloned() else { continue };
            let caps = rail.capabilities().clone();
            for id in &flush.payments {
                self.queued.remove(id);
            }
            // A payment may have left Queued meanwhile (an operator failed it): keep the rest.
            let ids: Vec<PaymentId> = flush
                .payments
                .into_iter()
                .filter(|id| self.state.book.payments[id].state == PaymentState::Queued)
                .collect();
            if !ids.is_empty() {
                self.settle(&rail, &caps, flush.asset, ids, now).await?;
            }
        }
        Ok(())
    }

    fn batch_of(&self, asset: Asset, ids: &[PaymentId]) -> Batch {
        let payouts = ids
            .iter()
            .map(|id| {
                let p = &self.state.book.payments[id].payment;
                Payout { payment: *id, destination: p.destination.clone(), amount: p.amount }
            })
            .collect();
        Batch { asset, payouts }
    }

    /// Plans, signs and broadcasts one settlement, journaling each step before its effect.
    async fn settle(
        &mut self,
        rail: &Arc<dyn Rail>,
        caps: &Capabilities,
        asset: Asset,
        ids: Vec<PaymentId>,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let batch = self.batch_of(asset, &ids);
        let quote = match rail.quote(&batch).await {
            Ok(quote) => quote,
            Err(_) => {
                self.breakers.get_mut(&caps.rail).expect("breaker").record(Outcome::Failure, now);
                return Ok(()); // the payments stay Queued in the book and are routed again
            }
        };
        self.settlements_made += 1;
        let id = SettlementId(derived(&[
            b"settlement",
            &self.journal.tip().to_le_bytes(),
            &self.settlements_made.to_le_bytes(),
        ]));
        let legs = batch
            .payouts
            .iter()
            .map(|p| Leg { payment: p.payment, destination: p.destination.clone(), amount: p.amount })
            .collect();
        let settlement =
            Settlement { id, rail: caps.rail, network: caps.network, asset, legs, fee_reserved: quote.fee_max };
        // The pools may refuse (not enough liquidity): then nothing is recorded, and the
        // payments stay Queued in the book, to be routed again.
        let fits =
            self.state.reserve_for(&settlement).map(|r| self.state.pools.can_reserve(&r).is_ok()).unwrap_or(false);
        if !fits {
            return Ok(());
        }
        self.record(vec![Event::SettlementPlanned { settlement, at: now }]).await?;
        let tx = match rail.build(&batch, &quote).await {
            Ok(tx) => tx,
            Err(_) => {
                // Nothing was signed: release, so the payments queue again.
                return self.record(vec![Event::SettlementReleased { settlement: id, at: now }]).await;
            }
        };
        self.record(vec![Event::SettlementSigned { settlement: id, tx: tx.clone(), at: now }]).await?;
        self.watching.insert(id, Watching { last_action_at: now, ..Watching::default() });
        self.broadcast(rail, id, &tx, now).await
    }

    async fn broadcast(
        &mut self,
        rail: &Arc<dyn Rail>,
        id: SettlementId,
        tx: &SignedTx,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let outcome = rail.broadcast(tx).await;
        let breaker = self.breakers.get_mut(&rail.capabilities().rail).expect("breaker");
        match outcome {
            Ok(()) => {
                breaker.record(Outcome::Success, now);
                let state = self.state.book.settlements[&id].state;
                if matches!(state, SettlementState::Signed | SettlementState::Broadcast) {
                    self.record(vec![Event::SettlementBroadcast { settlement: id, txid: tx.txid, at: now }]).await?;
                }
            }
            Err(_) => {
                breaker.record(Outcome::Failure, now);
            }
        }
        Ok(())
    }

    async fn watch_all(&mut self, now: Timestamp) -> Result<(), EngineError> {
        let live: Vec<SettlementId> = self
            .state
            .book
            .settlements
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    SettlementState::Signed | SettlementState::Broadcast | SettlementState::Confirmed { .. }
                )
            })
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            self.watch(id, now).await?;
        }
        Ok(())
    }

    fn rail_of(&self, id: SettlementId) -> Arc<dyn Rail> {
        let rail = self.state.book.settlements[&id].settlement.rail;
        Arc::clone(
            self.rails.iter().find(|r| r.capabilities().rail == rail).expect("settlements are on configured rails"),
        )
    }

    async fn watch(&mut self, id: SettlementId, now: Timestamp) -> Result<(), EngineError> {
        let rail = self.rail_of(id);
        let record = self.state.book.settlements[&id].clone();
        let info =
            self.watching.entry(id).or_insert_with(|| Watching { last_action_at: now, ..Watching::default() }).clone();
        if record.state == SettlementState::Signed {
            // Signed before a crash or a failed broadcast: the same bytes go out again.
            let latest = record.txs.last().expect("signed settlements have a transaction").clone();
            return self.broadcast(&rail, id, &latest, now).await;
        }
        let watch = Watch { versions: record.txs.clone(), seen_in_block: info.seen_in_block };
        let observation = match rail.observe(&watch).await {
            Ok(observation) => observation,
            Err(_) => {
                self.breakers.get_mut(&rail.capabilities().rail).expect("breaker").record(Outcome::Failure, now);
                return Ok(());
            }
        };
        self.breakers.get_mut(&rail.capabilities().rail).expect("breaker").record(Outcome::Success, now);
        if let Observation::Confirmed { txid, block, depth } = observation {
            let known = matches!(record.state, SettlementState::Confirmed { depth: d } if u64::from(d) == depth);
            if !known {
                let depth = u32::try_from(depth).unwrap_or(u32::MAX);
                self.record(vec![Event::SettlementConfirmed { settlement: id, txid, depth, at: now }]).await?;
            }
            self.watching.get_mut(&id).expect("inserted above").seen_in_block = Some(block);
        }
        let cancels = record.cancels.clone();
        let watch = SettlementWatch {
            observation,
            confirmations_final: u64::from(rail.capabilities().confirmations_final),
            last_action_at: info.last_action_at,
            bumps: u32::try_from(record.txs.len().saturating_sub(1 + cancels.len())).unwrap_or(u32::MAX),
            rebroadcasts: info.rebroadcasts,
            cancelling: !cancels.is_empty(),
            cancels,
            fee_above_cap: false,
            delivered_mismatch: false,
        };
        let action = router::assess(&watch, &self.config.anomaly, now);
        self.act(&rail, id, action, now).await
    }

    async fn act(
        &mut self,
        rail: &Arc<dyn Rail>,
        id: SettlementId,
        action: Action,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        let record = self.state.book.settlements[&id].clone();
        match action {
            Action::Wait => {}
            Action::Rebroadcast => {
                let info = self.watching.get_mut(&id).expect("watched");
                info.rebroadcasts += 1;
                info.last_action_at = now;
                let latest = record.txs.last().expect("a transaction").clone();
                let _ = rail.broadcast(&latest).await;
            }
            Action::Bump | Action::Cancel => {
                let previous = record.txs.last().expect("a transaction").clone();
                let batch = self.batch_of(
                    record.settlement.asset,
                    &record.settlement.legs.iter().map(|l| l.payment).collect::<Vec<_>>(),
                );
                let Ok(quote) = rail.quote(&batch).await else { return Ok(()) };
                let cancel = action == Action::Cancel;
                let built = if cancel {
                    rail.cancel(&previous, &quote).await
                } else {
                    rail.bump(&batch, &previous, &quote).await
                };
                let Ok(tx) = built else { return Ok(()) };
                let event = if cancel {
                    Event::SettlementCancelling { settlement: id, tx: tx.clone(), at: now }
                } else {
                    Event::SettlementReplaced { settlement: id, tx: tx.clone(), at: now }
                };
                self.record(vec![event]).await?;
                self.watching.get_mut(&id).expect("watched").last_action_at = now;
                let _ = rail.broadcast(&tx).await;
            }
            Action::Finalize { txid } => {
                let fee_paid = record.txs.iter().find(|t| t.txid == txid).map_or(Amount::ZERO, |t| t.fee);
                self.record(vec![Event::SettlementFinal { settlement: id, txid, fee_paid, at: now }]).await?;
                self.watching.remove(&id);
            }
            Action::RollBack { proof } => {
                let mut events = vec![Event::SettlementDead { settlement: id, proof, at: now }];
                // Provably dead: every payment of the attempt is reissued.
                for leg in &record.settlement.legs {
                    events.push(Event::PaymentReissued { payment: leg.payment, previous: id, at: now });
                    events.push(Event::PaymentQueued { payment: leg.payment, at: now });
                }
                self.record(events).await?;
                self.watching.remove(&id);
            }
            Action::WatchAgain => {
                self.watching.get_mut(&id).expect("watched").seen_in_block = None;
                if matches!(record.state, SettlementState::Confirmed { .. }) {
                    self.record(vec![Event::SettlementReorged { settlement: id, at: now }]).await?;
                }
            }
            Action::Hold { reason } => {
                let info = self.watching.get_mut(&id).expect("watched");
                if !info.held {
                    info.held = true;
                    let events = record
                        .settlement
                        .legs
                        .iter()
                        .map(|l| Event::PaymentHeld { payment: l.payment, reason: reason.clone(), at: now })
                        .collect();
                    self.record(events).await?;
                }
            }
        }
        Ok(())
    }

    fn known_rail(&self, rail: RailId) -> Result<(), OperatorError> {
        if self.rails.iter().any(|r| r.capabilities().rail == rail) {
            Ok(())
        } else {
            Err(OperatorError::UnknownRail(rail))
        }
    }

    /// Stops new planning on `rail`; what is in flight there stays watched. Journaled with who
    /// and why.
    pub async fn pause(
        &mut self,
        rail: RailId,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.known_rail(rail)?;
        if self.state.paused.contains(&rail) {
            return Err(OperatorError::AlreadyPaused(rail));
        }
        self.record(vec![Event::RailPaused { rail, operator: operator.into(), reason: reason.into(), at: now }])
            .await?;
        Ok(())
    }

    pub async fn resume_rail(
        &mut self,
        rail: RailId,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        self.known_rail(rail)?;
        if !self.state.paused.contains(&rail) {
            return Err(OperatorError::NotPaused(rail));
        }
        self.record(vec![Event::RailResumed { rail, operator: operator.into(), reason: reason.into(), at: now }])
            .await?;
        Ok(())
    }

    /// Moves `rail`'s queued payments to the rails the router picks with `rail` out. A dry run
    /// reports the same moves and changes nothing; a real drain is journaled with who and why.
    /// Payments in flight are never moved.
    pub async fn drain(
        &mut self,
        rail: RailId,
        dry_run: bool,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<queue::DrainReport, OperatorError> {
        self.known_rail(rail)?;
        let mut paused = self.state.paused.clone();
        paused.insert(rail);
        let states = rail_states(&self.rails, &self.breakers, &paused, now);
        let (router, book, pools) = (&self.router, &self.state.book, &self.state.pools);
        let report = self.queue.drain(rail, now, dry_run, |item| {
            let payment = &book.payments[&item.id].payment;
            router.decide(payment, item.deadline, &states, &|r, a| pools.available(r, a), now).chosen
        });
        if !dry_run {
            for payment in self.batcher.take_rail(rail) {
                self.queued.remove(&payment);
            }
        }
        if !dry_run && !report.moves.is_empty() {
            let moved = u32::try_from(report.moves.len()).unwrap_or(u32::MAX);
            self.record(vec![Event::RailDrained {
                rail,
                moved,
                operator: operator.into(),
                reason: reason.into(),
                at: now,
            }])
            .await?;
        }
        Ok(report)
    }

    /// Resolves a held payment: retry or fail it if nothing of it is in flight, resume
    /// watching it if it is. The state machine refuses anything else.
    pub async fn resolve(
        &mut self,
        payment: PaymentId,
        resolution: Resolution,
        operator: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), OperatorError> {
        let state = self.state.book.payment(payment).map_err(|_| OperatorError::UnknownPayment(payment))?.state;
        let legal = matches!(
            (state, resolution),
            (PaymentState::Held { in_flight: false }, Resolution::Retry | Resolution::Fail)
                | (PaymentState::Held { in_flight: true }, Resolution::Resume)
        );
        if !legal {
            return Err(OperatorError::CannotResolve { payment, state, resolution });
        }
        self.record(vec![Event::PaymentResolved {
            payment,
            resolution,
            operator: operator.into(),
            reason: reason.into(),
            at: now,
        }])
        .await?;
        if resolution == Resolution::Resume
            && let Some(settlement) = self.state.book.payments[&payment].settlement
        {
            // Watch it afresh: counters reset, its bytes go out again.
            self.watching.insert(settlement, Watching { last_action_at: now, ..Watching::default() });
            let rail = self.rail_of(settlement);
            let latest = self.state.book.settlements[&settlement].txs.last().cloned();
            if let Some(tx) = latest {
                let _ = rail.broadcast(&tx).await;
            }
        }
        Ok(())
    }

    /// Compares what the journal says was settled with what the chains say: every final
    /// settlement's transaction must still be on chain at final depth, no dead settlement may
    /// have a paying version confirmed, and every destination must hold at least what railyard
    /// settled to it (exactly, on chains where nobody else pays it). Reports every difference;
    /// changes nothing.
    pub async fn reconcile(&mut self) -> Reconciliation {
        let mut report = Reconciliation::default();
        let mut owed: BTreeMap<(RailId, Address, Asset), Amount> = BTreeMap::new();
        for (id, record) in &self.state.book.settlements {
            let paying = |txid: &[u8; 32]| !record.cancels.contains(txid);
            let final_tx = match record.state {
                SettlementState::Final => Some(()),
                SettlementState::Dead => None,
                _ => continue,
            };
            let rail = self.rail_of(*id);
            let watch = Watch { versions: record.txs.clone(), seen_in_block: None };
            report.settlements_checked += 1;
            let observed = match rail.observe(&watch).await {
                Ok(observed) => observed,
                Err(error) => {
                    report
                        .differences
                        .push(Difference::Unreachable { rail: record.settlement.rail, error: error.to_string() });
                    continue;
                }
            };
            let confirmed_paying = matches!(&observed, Observation::Confirmed { txid, .. } if paying(txid));
            let deep = matches!(&observed, Observation::Confirmed { depth, .. } if *depth >= u64::from(rail.capabilities().confirmations_final));
            if final_tx.is_some() {
                if !(confirmed_paying && deep) {
                    report.differences.push(Difference::FinalNotOnChain { settlement: *id, observed });
                }
                for leg in &record.settlement.legs {
                    let key = (record.settlement.rail, leg.destination.clone(), record.settlement.asset);
                    let entry = owed.entry(key).or_insert(Amount::ZERO);
                    *entry = entry.checked_add(leg.amount).unwrap_or(Amount::MAX);
                }
            } else if confirmed_paying {
                report.differences.push(Difference::DeadButPaid { settlement: *id, observed });
            }
        }
        for ((rail_id, destination, asset), expected) in owed {
            let rail =
                Arc::clone(self.rails.iter().find(|r| r.capabilities().rail == rail_id).expect("configured rail"));
            report.destinations_checked += 1;
            match rail.balance_of(&destination, asset).await {
                Ok(held) if held < expected => {
                    report.differences.push(Difference::Shortfall {
                        rail: rail_id,
                        destination,
                        asset,
                        expected,
                        held,
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    report.differences.push(Difference::Unreachable { rail: rail_id, error: error.to_string() })
                }
            }
        }
        report
    }

    /// Payments by state, for status views and tests.
    pub fn count_by_state(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in self.state.book.payments.values() {
            *counts.entry(record.state.to_string()).or_default() += 1;
        }
        counts
    }
}
