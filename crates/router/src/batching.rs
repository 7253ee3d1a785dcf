//! Settlement batching per (rail, asset): a batch is flushed when it reaches the rail's size
//! max, when its oldest payment has waited the window of its class, or at once when it holds a
//! payment of an immediate class (urgent).

use std::collections::BTreeMap;

use model::{Asset, ClassName, PaymentId, RailId, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPolicy {
    /// How long a payment of each class may wait for company.
    pub windows_ms: BTreeMap<ClassName, u64>,
    /// For classes not listed.
    pub window_default_ms: u64,
    /// Classes that never wait (flush at once).
    pub immediate: Vec<ClassName>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlushReason {
    Full,
    Window,
    Immediate,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flush {
    pub rail: RailId,
    pub asset: Asset,
    pub payments: Vec<PaymentId>,
    pub reason: FlushReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Waiting {
    payment: PaymentId,
    immediate: bool,
    due: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Group {
    size_max: usize,
    waiting: Vec<Waiting>,
}

/// Payments routed but not yet in a settlement, grouped by (rail, asset).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batcher {
    policy: BatchPolicy,
    groups: BTreeMap<(RailId, Asset), Group>,
}

impl Batcher {
    pub fn new(policy: BatchPolicy) -> Batcher {
        Batcher { policy, groups: BTreeMap::new() }
    }

    pub fn add(
        &mut self,
        rail: RailId,
        asset: Asset,
        size_max: usize,
        payment: PaymentId,
        class: ClassName,
        now: Timestamp,
    ) {
        let window = self.policy.windows_ms.get(&class).copied().unwrap_or(self.policy.window_default_ms);
        let waiting =
            Waiting { payment, immediate: self.policy.immediate.contains(&class), due: now.saturating_add_ms(window) };
        let group = self
            .groups
            .entry((rail, asset))
            .or_insert_with(|| Group { size_max: size_max.max(1), waiting: Vec::new() });
        group.waiting.push(waiting);
    }

    /// Takes a payment out (failover moved it, or it was cancelled); true if it was waiting.
    pub fn remove(&mut self, payment: PaymentId) -> bool {
        let mut found = false;
        for group in self.groups.values_mut() {
            let before = group.waiting.len();
            group.waiting.retain(|w| w.payment != payment);
            found |= group.waiting.len() != before;
        }
        self.groups.retain(|_, g| !g.waiting.is_empty());
        found
    }

    /// Takes every payment waiting for `rail` out (its breaker opened, or it was paused or
    /// drained), in arrival order, so that they can be routed again.
    pub fn take_rail(&mut self, rail: RailId) -> Vec<PaymentId> {
        let keys: Vec<(RailId, Asset)> = self.groups.keys().filter(|(r, _)| *r == rail).copied().collect();
        let mut out = Vec::new();
        for key in keys {
            if let Some(group) = self.groups.remove(&key) {
                out.extend(group.waiting.into_iter().map(|w| w.payment));
            }
        }
        out
    }

    /// Every batch due at `now`, in (rail, asset) order, each at most the rail's size max.
    pub fn flush(&mut self, now: Timestamp) -> Vec<Flush> {
        self.flush_where(now, |_| true)
    }

    /// The batches of one rail due at `now` (a paused rail's batches wait).
    pub fn flush_rail(&mut self, rail: RailId, now: Timestamp) -> Vec<Flush> {
        self.flush_where(now, |r| r == rail)
    }

    fn flush_where(&mut self, now: Timestamp, pick: impl Fn(RailId) -> bool) -> Vec<Flush> {
        let mut out = Vec::new();
        for ((rail, asset), group) in self.groups.iter_mut().filter(|((r, _), _)| pick(*r)) {
            while group.waiting.len() >= group.size_max {
                let payments = group.waiting.drain(..group.size_max).map(|w| w.payment).collect();
                out.push(Flush { rail: *rail, asset: *asset, payments, reason: FlushReason::Full });
            }
            let reason = if group.waiting.iter().any(|w| w.immediate) {
                Some(FlushReason::Immediate)
            } else if group.waiting.iter().any(|w| w.due <= now) {
                Some(FlushReason::Window)
            } else {
                None
            };
            if let Some(reason) = reason {
                let payments = group.waiting.drain(..).map(|w| w.payment).collect();
                out.push(Flush { rail: *rail, asset: *asset, payments, reason });
            }
        }
        self.groups.retain(|_, g| !g.waiting.is_empty());
        out
    }

    /// When the next window flush is due, for the engine's timer.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.groups.values().flat_map(|g| g.waiting.iter().map(|w| w.due)).min()
    }

    /// Every payment waiting, in no particular order.
    pub fn payments(&self) -> impl Iterator<Item = PaymentId> + '_ {
        self.groups.values().flat_map(|g| g.waiting.iter().map(|w| w.payment))
    }

    pub fn waiting(&self) -> usize {
        self.groups.values().map(|g| g.waiting.len()).sum()
    }
}
