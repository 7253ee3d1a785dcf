//! railyard's payment queue: where accepted payments wait for a settlement.
//!
//! - Priority classes from configuration, served by stride scheduling per rail (weighted fair:
//!   a class of weight w gets w shares while every class is backlogged) and earliest deadline
//!   first inside a class, FIFO on equal deadlines.
//! - Rate limits with governor's GCRA, per merchant and per rail, on the injected clock.
//! - Bounded capacity, globally and per merchant: an enqueue over a bound is refused whole with
//!   a retry-after and changes nothing.
//! - Drain: move everything queued for a rail to other rails, with a dry run.
//!
//! No I/O, no clock, no randomness: every call takes `now`, and every change is described by a
//! [`QueueOp`] that the caller journals. [`Queue::apply`] replays ops exactly, so the queue is
//! rebuilt from the journal on restart.
//!
//! Starvation bound: while class i is backlogged on a rail and not blocked by rate limits, the
//! number of payments of other classes served between two of its services is at most
//! `Σ_{j≠i} (⌈w_j / w_i⌉ + 1)` (stride scheduling: each service of j advances j's pass by
//! `S / w_j`, and i is served once its pass is the smallest). With the shipped weights 8/4/2/1,
//! bulk waits behind at most 17 payments of other classes.

mod config;
mod limits;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::ops::Bound::{Excluded, Unbounded};

use model::{ClassName, MerchantId, PaymentId, RailId, Timestamp};
use serde::{Deserialize, Serialize};

pub use config::{CLASSES_MAX, ClassConfig, ConfigError, Limit, QueueConfig, WEIGHT_MAX};
use limits::{InjectedClock, Limiters};

/// A fixed hasher: hash maps here are never iterated for decisions, and a fixed one keeps even
/// their memory layout the same from run to run. Ids, merchants and rails are railyard's own
/// keys, not an adversary's, so it is the book's cheap mixing hasher (SipHash was most of a
/// lookup here).
type Hasher = BuildHasherDefault<model::open::IdHasher>;

/// Each class's pass advances by `STRIDE_BASE / weight` per service.
const STRIDE_BASE: u128 = 1 << 40;

/// What the caller asks to queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enqueue {
    pub id: PaymentId,
    pub merchant: MerchantId,
    pub class: ClassName,
    /// The rail the router targets; a drain re-targets it.
    pub rail: RailId,
    pub deadline: Option<Timestamp>,
}

/// A payment waiting in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedPayment {
    pub id: PaymentId,
    pub merchant: MerchantId,
    pub class: ClassName,
    pub rail: RailId,
    pub deadline: Timestamp,
    pub enqueued_at: Timestamp,
    /// Arrival order, for FIFO among equal deadlines.
    pub seq: u64,
}

/// Every change to the queue, for the journal. Applying the ops of a run, in order, to a queue
/// with the same configuration rebuilds it exactly (contents, order, fairness and rate-limit
/// state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOp {
    Enqueued {
        items: Vec<QueuedPayment>,
        at: Timestamp,
    },
    /// `served` in service order; `charged` is a merchant whose rate-limit cell was taken for a
    /// payment the rail limit then refused (governor cannot give a cell back).
    Dequeued {
        rail: RailId,
        served: Vec<PaymentId>,
        charged: Option<MerchantId>,
        at: Timestamp,
    },
    Removed {
        ids: Vec<PaymentId>,
    },
    Moved {
        moves: Vec<(PaymentId, RailId)>,
        at: Timestamp,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue is full ({capacity} payments); retry after {retry_after_ms} ms")]
    Full { capacity: usize, retry_after_ms: u64 },
    #[error("merchant {merchant} has {capacity} payments queued, its limit; retry after {retry_after_ms} ms")]
    MerchantFull { merchant: MerchantId, capacity: usize, retry_after_ms: u64 },
    #[error("payment {0} is already queued")]
    Duplicate(PaymentId),
    #[error("unknown priority class {0}")]
    UnknownClass(ClassName),
    #[error("the batch is empty")]
    Empty,
}

impl QueueError {
    /// For backpressure: how long the caller should wait before retrying, if that is the fix.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            QueueError::Full { retry_after_ms, .. } | QueueError::MerchantFull { retry_after_ms, .. } => {
                Some(*retry_after_ms)
            }
            _ => None,
        }
    }
}

/// The result of a dequeue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dequeued {
    pub payments: Vec<QueuedPayment>,
    /// When fewer than asked were handed out because of rate limits: the earliest moment one
    /// more could be.
    pub next_eligible: Option<Timestamp>,
    /// To journal; `None` when nothing changed.
    pub op: Option<QueueOp>,
}

/// One planned move of a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub payment: PaymentId,
    pub from: RailId,
    pub to: RailId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReport {
    pub moves: Vec<Move>,
    /// Payments with no other eligible rail: they stay queued where they are.
    pub unmovable: Vec<PaymentId>,
    /// To journal; `None` for a dry run or when nothing moves.
    pub op: Option<QueueOp>,
}

/// Depth and oldest age of one slice of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    pub queued: usize,
    pub oldest_age_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depths {
    pub classes: BTreeMap<ClassName, Depth>,
    pub merchants: BTreeMap<MerchantId, Depth>,
    pub rails: BTreeMap<RailId, Depth>,
}

/// One class's payments on one rail, in service order.
#[derive(Debug, Default)]
struct ClassLane {
    order: BTreeSet<(Timestamp, u64, PaymentId)>,
    /// Stride-scheduling pass: the class with the smallest pass is served next.
    pass: u128,
}

#[derive(Debug)]
struct Lane {
    classes: Vec<ClassLane>,
    /// The pass of the last service: a class that becomes backlogged starts no earlier.
    vtime: u128,
}

#[derive(Debug)]
pub struct Queue {
    config: QueueConfig,
    strides: Vec<u128>,
    entries: HashMap<PaymentId, QueuedPayment, Hasher>,
    lanes: BTreeMap<RailId, Lane>,
    merchant_depth: HashMap<MerchantId, usize, Hasher>,
    next_seq: u64,
    clock: InjectedClock,
    merchant_limits: Limiters<MerchantId>,
    rail_limits: Limiters<RailId>,
}

impl Queue {
    pub fn new(config: QueueConfig) -> Result<Queue, ConfigError> {
        config.validate()?;
        let strides = config.classes.iter().map(|c| STRIDE_BASE / u128::from(c.weight)).collect();
        Ok(Queue {
            config,
            strides,
            entries: HashMap::default(),
            lanes: BTreeMap::new(),
            merchant_depth: HashMap::default(),
            next_seq: 0,
            clock: InjectedClock::default(),
            merchant_limits: Limiters::new(),
            rail_limits: Limiters::new(),
        })
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Changes an existing class's weight, default deadline and age limit; what is queued
    /// stays where it is (its deadline was fixed when it was queued).
    pub fn set_class(&mut self, class: ClassConfig) -> Result<(), ConfigError> {
        let mut next = self.config.clone();
        let index = self
            .class_index(class.name)
            .ok_or_else(|| ConfigError { key: format!("classes.{}", class.name), problem: "no such class".into() })?;
        let weight = class.weight;
        next.classes[index] = class;
        next.validate()?;
        self.strides[index] = STRIDE_BASE / u128::from(weight);
        self.config = next;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: PaymentId) -> Option<&QueuedPayment> {
        self.entries.get(&id)
    }

    fn class_index(&self, class: ClassName) -> Option<usize> {
        self.config.classes.iter().position(|c| c.name == class)
    }

    fn merchant_limit(&self, merchant: MerchantId) -> Limit {
        self.config.merchant_limits.get(&merchant).copied().unwrap_or(self.config.merchant_limit)
    }

    fn rail_limit(&self, rail: RailId) -> Limit {
        self.config.rail_limits.get(&rail).copied().unwrap_or(self.config.rail_limit)
    }

    /// Queues a batch whole, or refuses it whole and changes nothing.
    pub fn enqueue(&mut self, batch: &[Enqueue], now: Timestamp) -> Result<QueueOp, QueueError> {
        if batch.is_empty() {
            return Err(QueueError::Empty);
        }
        self.check_capacity(batch)?;
        let mut items = Vec::with_capacity(batch.len());
        let mut ids: HashSet<PaymentId, Hasher> = HashSet::with_capacity_and_hasher(batch.len(), Hasher::default());
        for (n, request) in (self.next_seq..).zip(batch) {
            let class = self.class_index(request.class).ok_or(QueueError::UnknownClass(request.class))?;
            if self.entries.contains_key(&request.id) || !ids.insert(request.id) {
                return Err(QueueError::Duplicate(request.id));
            }
            let deadline_default = now.saturating_add_ms(self.config.classes[class].deadline_default_ms);
            items.push(QueuedPayment {
                id: request.id,
                merchant: request.merchant,
                class: request.class,
                rail: request.rail,
                deadline: request.deadline.unwrap_or(deadline_default),
                enqueued_at: now,
                seq: n,
            });
        }
        let op = QueueOp::Enqueued { items, at: now };
        self.apply(&op);
        Ok(op)
    }

    fn check_capacity(&self, batch: &[Enqueue]) -> Result<(), QueueError> {
        let total = self.entries.len() + batch.len();
        if total > self.config.capacity {
            // Time for the rails to make room, at their configured rates.
            let excess = (total - self.config.capacity) as u64;
            let rate: u64 = self.lanes.keys().map(|r| u64::from(self.rail_limit(*r).per_second)).sum::<u64>().max(1);
            let retry_after_ms = (excess * 1000).div_ceil(rate).max(1000);
            return Err(QueueError::Full { capacity: self.config.capacity, retry_after_ms });
        }
        let mut per_merchant: BTreeMap<MerchantId, usize> = BTreeMap::new();
        for request in batch {
            *per_merchant.entry(request.merchant).or_default() += 1;
        }
        for (merchant, adding) in per_merchant {
            let queued = self.merchant_depth.get(&merchant).copied().unwrap_or(0);
            let capacity = self.config.capacity_per_merchant;
            if queued + adding > capacity {
                let excess = (queued + adding - capacity) as u64;
                let rate = u64::from(self.merchant_limit(merchant).per_second);
                let retry_after_ms = (excess * 1000).div_ceil(rate).max(1000);
                return Err(QueueError::MerchantFull { merchant, capacity, retry_after_ms });
            }
        }
        Ok(())
    }

    /// Hands out up to `n` payments queued for `rail`, fairly across classes and within the
    /// merchants' and the rail's rate limits. `eligible` can refuse a payment (for example a
    /// pool too low for it); refused payments stay queued.
    pub fn dequeue(
        &mut self,
        rail: RailId,
        n: usize,
        now: Timestamp,
        mut eligible: impl FnMut(&QueuedPayment) -> bool,
    ) -> Dequeued {
        self.clock.set(now);
        let mut charged = None;
        let mut next_eligible: Option<Timestamp> = None;
        let mut earliest = |t: Timestamp| next_eligible = Some(next_eligible.map_or(t, |e: Timestamp| e.min(t)));
        let Some(lane) = self.lanes.get(&rail) else {
            return Dequeued { payments: Vec::new(), next_eligible: None, op: None };
        };
        // Sized once: a list grown by doubling frees a block of each size on the way, and
        // blocks this large freed every round fragment the allocator's heap.
        let waiting: usize = lane.classes.iter().map(|c| c.order.len()).sum();
        let mut served: Vec<QueuedPayment> = Vec::with_capacity(n.min(waiting));
        // Each class is read once, front to back: a payment passed over in this call (taken,
        // refused by `eligible`, or of a rate-limited merchant) is not looked at again.
        let mut cursors: Vec<Option<(Timestamp, u64, PaymentId)>> = vec![None; lane.classes.len()];
        let mut passes: Vec<u128> = lane.classes.iter().map(|c| c.pass).collect();
        let mut blocked = vec![false; lane.classes.len()];
        let mut limited: Vec<MerchantId> = Vec::new();
        let mut scanned = 0usize;
        'serve: while served.len() < n {
            let lane = &self.lanes[&rail];
            let after = |c: usize| match cursors[c] {
                Some(key) => lane.classes[c].order.range((Excluded(key), Unbounded)),
                None => lane.classes[c].order.range(..),
            };
            let pick = (0..lane.classes.len()).filter(|&c| !blocked[c]).min_by_key(|&c| (passes[c], c));
            let Some(class) = pick else { break };
            let mut found = None;
            for &key in after(class) {
                scanned += 1;
                if scanned > self.config.scan_max {
                    break 'serve;
                }
                cursors[class] = Some(key);
                let item = self.entries[&key.2];
                if limited.contains(&item.merchant) || !eligible(&item) {
                    continue;
                }
                let limit = self.merchant_limit(item.merchant);
                match self.merchant_limits.take(item.merchant, limit, &self.clock) {
                    Ok(()) => {
                        found = Some(item);
                        break;
                    }
                    Err(at) => {
                        earliest(at);
                        limited.push(item.merchant);
                    }
                }
            }
            let Some(item) = found else {
                blocked[class] = true;
                continue;
            };
            let rail_limit = self.rail_limit(rail);
            if let Err(at) = self.rail_limits.take(rail, rail_limit, &self.clock) {
                earliest(at);
                charged = Some(item.merchant);
                break;
            }
            passes[class] += self.strides[class];
            served.push(item);
        }
        if served.is_empty() && charged.is_none() {
            return Dequeued { payments: served, next_eligible, op: None };
        }
        if served.len() == n {
            next_eligible = None;
        }
        let op = QueueOp::Dequeued { rail, served: served.iter().map(|p| p.id).collect(), charged, at: now };
        self.apply_dequeued(&op, false);
        Dequeued { payments: served, next_eligible, op: Some(op) }
    }

    /// Removes payments (a cancel); unknown ids are ignored. Returns what was removed.
    pub fn remove(&mut self, ids: &[PaymentId]) -> (Vec<QueuedPayment>, Option<QueueOp>) {
        let mut present: Vec<PaymentId> = ids.iter().copied().filter(|id| self.entries.contains_key(id)).collect();
        present.sort_unstable();
        present.dedup();
        if present.is_empty() {
            return (Vec::new(), None);
        }
        let removed = present.iter().map(|id| self.entries[id]).collect();
        let op = QueueOp::Removed { ids: present };
        self.apply(&op);
        (removed, Some(op))
    }

    /// Moves everything queued for `from` to the rail `retarget` names for each payment
    /// (`None`: no other eligible rail; it stays). A dry run reports the same moves and
    /// changes nothing.
    pub fn drain(
        &mut self,
        from: RailId,
        now: Timestamp,
        dry_run: bool,
        mut retarget: impl FnMut(&QueuedPayment) -> Option<RailId>,
    ) -> DrainReport {
        let mut moves = Vec::new();
        let mut unmovable = Vec::new();
        if let Some(lane) = self.lanes.get(&from) {
            for class in &lane.classes {
                for &(_, _, id) in &class.order {
                    let item = &self.entries[&id];
                    match retarget(item).filter(|to| *to != from) {
                        Some(to) => moves.push(Move { payment: id, from, to }),
                        None => unmovable.push(id),
                    }
                }
            }
        }
        let op = (!dry_run && !moves.is_empty())
            .then(|| QueueOp::Moved { moves: moves.iter().map(|m| (m.payment, m.to)).collect(), at: now });
        if let Some(op) = &op {
            self.apply(op);
        }
        DrainReport { moves, unmovable, op }
    }

    /// Payments queued longer than their class's `age_max_ms`, oldest first.
    pub fn stale(&self, now: Timestamp) -> Vec<QueuedPayment> {
        let mut stale: Vec<QueuedPayment> = self
            .entries
            .values()
            .filter(|p| {
                let age_max = self.class_index(p.class).and_then(|c| self.config.classes[c].age_max_ms);
                age_max.is_some_and(|max| now.saturating_since(p.enqueued_at) > max)
            })
            .copied()
            .collect();
        stale.sort_unstable_by_key(|p| (p.enqueued_at, p.seq));
        stale
    }

    /// Depth and oldest age per class, merchant and rail.
    pub fn depths(&self, now: Timestamp) -> Depths {
        let mut depths = Depths::default();
        let add = |depth: &mut Depth, p: &QueuedPayment| {
            depth.queued += 1;
            depth.oldest_age_ms = depth.oldest_age_ms.max(now.saturating_since(p.enqueued_at));
        };
        for p in self.entries.values() {
            add(depths.classes.entry(p.class).or_default(), p);
            add(depths.merchants.entry(p.merchant).or_default(), p);
            add(depths.rails.entry(p.rail).or_default(), p);
        }
        depths
    }

    /// Every queued payment in service order per rail and class: a canonical view of the
    /// queue's contents, for comparisons.
    pub fn snapshot(&self) -> Vec<(RailId, ClassName, Vec<QueuedPayment>, u128)> {
        let mut out = Vec::new();
        for (rail, lane) in &self.lanes {
            for (class, cl) in self.config.classes.iter().zip(&lane.classes) {
                let items = cl.order.iter().map(|(_, _, id)| self.entries[id]).collect();
                out.push((*rail, class.name, items, cl.pass));
            }
        }
        out
    }

    /// Applies an op from the journal (or from this queue's own calls). Ops are trusted: they
    /// were produced by a queue with the same configuration.
    pub fn apply(&mut self, op: &QueueOp) {
        match op {
            QueueOp::Enqueued { items, at } => {
                self.clock.set(*at);
                for item in items {
                    self.insert(*item);
                    self.next_seq = self.next_seq.max(item.seq + 1);
                }
            }
            QueueOp::Dequeued { .. } => self.apply_dequeued(op, true),
            QueueOp::Removed { ids } => {
                for id in ids {
                    if let Some(item) = self.entries.remove(id) {
                        self.unlink(&item);
                        self.decrement_merchant(item.merchant);
                    }
                }
            }
            QueueOp::Moved { moves, at } => {
                self.clock.set(*at);
                for (id, to) in moves {
                    let Some(mut item) = self.entries.remove(id) else { continue };
                    self.unlink(&item);
                    self.decrement_merchant(item.merchant);
                    item.rail = *to;
                    self.insert(item);
                }
            }
        }
    }

    /// Removes the served payments and advances the passes; on replay also takes the
    /// rate-limit cells the live call took.
    fn apply_dequeued(&mut self, op: &QueueOp, take_cells: bool) {
        let QueueOp::Dequeued { rail, served, charged, at } = op else { unreachable!("called with a Dequeued op") };
        self.clock.set(*at);
        for id in served {
            let Some(item) = self.entries.remove(id) else { continue };
            let class = self.class_index(item.class).expect("queued classes are configured");
            let stride = self.strides[class];
            let lane = self.lanes.get_mut(rail).expect("served from an existing lane");
            let class_lane = &mut lane.classes[class];
            class_lane.order.remove(&(item.deadline, item.seq, item.id));
            lane.vtime = class_lane.pass;
            class_lane.pass += stride;
            self.decrement_merchant(item.merchant);
            if take_cells {
                let (merchant_limit, rail_limit) = (self.merchant_limit(item.merchant), self.rail_limit(*rail));
                self.merchant_limits.retake(item.merchant, merchant_limit, &self.clock);
                self.rail_limits.retake(*rail, rail_limit, &self.clock);
            }
        }
        if let (true, Some(merchant)) = (take_cells, charged) {
            let limit = self.merchant_limit(*merchant);
            self.merchant_limits.retake(*merchant, limit, &self.clock);
        }
    }

    fn insert(&mut self, item: QueuedPayment) {
        let class = self.class_index(item.class).expect("queued classes are configured");
        let classes = self.config.classes.len();
        let lane = self
            .lanes
            .entry(item.rail)
            .or_insert_with(|| Lane { classes: (0..classes).map(|_| ClassLane::default()).collect(), vtime: 0 });
        let class_lane = &mut lane.classes[class];
        if class_lane.order.is_empty() {
            // A class that was idle does not bank credit for the time it had nothing queued.
            class_lane.pass = class_lane.pass.max(lane.vtime);
        }
        class_lane.order.insert((item.deadline, item.seq, item.id));
        self.entries.insert(item.id, item);
        *self.merchant_depth.entry(item.merchant).or_default() += 1;
    }

    fn unlink(&mut self, item: &QueuedPayment) {
        let class = self.class_index(item.class).expect("queued classes are configured");
        if let Some(lane) = self.lanes.get_mut(&item.rail) {
            lane.classes[class].order.remove(&(item.deadline, item.seq, item.id));
        }
    }

    fn decrement_merchant(&mut self, merchant: MerchantId) {
        if let Some(depth) = self.merchant_depth.get_mut(&merchant) {
            *depth -= 1;
            if *depth == 0 {
                self.merchant_depth.remove(&merchant);
            }
        }
    }

    /// Number of merchants and rails with a rate-limit state (for memory accounting).
    pub fn limiter_count(&self) -> (usize, usize) {
        (self.merchant_limits.len(), self.rail_limits.len())
    }
}
