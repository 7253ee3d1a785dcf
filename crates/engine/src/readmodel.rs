//! The read model: what queries read without waiting for the engine, published by the engine
//! task after every round and command with what that round touched (see `service`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use model::*;

use crate::{Engine, Reconciliation};

/// A rail as the read model shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RailView {
    pub rail: RailId,
    pub network: Network,
    pub paused: bool,
    pub breaker: router::BreakerState,
    pub success_permille: u32,
    /// Payments queued for it (refreshed at most once a second).
    pub queued: usize,
    /// How long a settlement takes to be final on it, as it declares.
    pub finality_expected_ms: u64,
    /// Payouts per second its queue lets through (the rail's rate limit).
    pub rate_per_second: u32,
}

/// A pool as the read model shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolView {
    pub rail: RailId,
    pub asset: Asset,
    /// What routing may still reserve.
    pub available: Amount,
    /// Reserved for settlements not yet final.
    pub reserved: Amount,
    pub min: Amount,
    pub target: Amount,
    pub max: Amount,
}

/// The policy in force: classes, urgency, routing weights and rules.
#[derive(Clone, Debug, Default)]
pub struct PolicyView {
    pub classes: Vec<queue::ClassConfig>,
    pub urgent: Vec<ClassName>,
    pub weights: Option<router::Weights>,
    pub rules: Vec<Rule>,
}

/// What settled on one rail in one asset since the engine opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettledTotals {
    pub settlements: u64,
    pub payouts: u64,
    pub amount: Amount,
    /// The fees the chain charged, in the rail's fee asset.
    pub fees: Amount,
    pub fee_asset: Option<Asset>,
}

/// What queries read without waiting for the engine: published after every round.
#[derive(Clone, Debug, Default)]
pub struct ReadModel {
    /// The time of the round that published it.
    pub as_of: Timestamp,
    /// The journal's tip when it was published (on a standby: the last record it applied).
    pub tip: u64,
    /// On a standby: records the shared journal holds past `tip`, at the last look (0: caught
    /// up).
    pub lag: u64,
    /// Whether this node takes no commands but merchants' batches: a standby (it follows),
    /// or a node acting only on rails (commands go to the coordinator).
    pub standby: bool,
    /// Why the engine stopped, if it did.
    pub stopped: Option<String>,
    pub counts: BTreeMap<PaymentState, u64>,
    pub payments: HashMap<PaymentId, PaymentRecord>,
    pub batches: HashMap<BatchId, BatchRecord>,
    /// The classes (as treasury last set them), the urgent ones, the routing weights and rules.
    pub policy: Arc<PolicyView>,
    policy_version: u64,
    /// Why each open payment was routed where it was (or waits), in words.
    pub routes: HashMap<PaymentId, Arc<str>>,
    /// Open settlements (finished ones are in the history store).
    pub settlements: HashMap<SettlementId, SettlementRecord>,
    /// Queue depth and oldest age by rail, class and merchant (refreshed at most once a second).
    pub depths: queue::Depths,
    /// API keys and webhook endpoints.
    pub access: Arc<Access>,
    /// Merchants' guards and the payouts they hold.
    pub guards: Arc<model::Guards>,
    /// What settled per rail and asset since the engine opened.
    pub settled: BTreeMap<(RailId, Asset), SettledTotals>,
    pub rails: Vec<RailView>,
    pub pools: Vec<PoolView>,
    pub outbox: usize,
    pub last_reconciliation: Option<Reconciliation>,
    /// Reconciliation differences found since the engine opened.
    pub differences_found: u64,
    /// Settlements whose last check found a difference, and what it was.
    pub flagged: BTreeMap<SettlementId, crate::Difference>,
    flagged_version: u64,
}

impl ReadModel {
    /// Whether every payment is settled, failed or held: nothing left without an operator.
    pub fn is_quiet(&self) -> bool {
        self.counts
            .iter()
            .all(|(state, n)| *n == 0 || state.is_terminal() || matches!(state, PaymentState::Held { .. }))
    }

    /// Payments per state, by the state's name.
    pub fn counts_by_name(&self) -> BTreeMap<String, u64> {
        self.counts.iter().map(|(state, n)| (state.to_string(), *n)).collect()
    }
}

impl Engine {
    /// Updates the read model with what changed since the last publication.
    pub(crate) fn publish(&mut self, read: &RwLock<ReadModel>, now: Timestamp, round: bool) {
        let touched = std::mem::take(&mut self.touched);
        let touched_batches = std::mem::take(&mut self.touched_batches);
        let touched_settlements = std::mem::take(&mut self.touched_settlements);
        let refresh_depths = round && now.saturating_since(self.depths_at) >= 1_000;
        if refresh_depths {
            self.depths_at = now;
        }
        let depths = refresh_depths.then(|| self.staging.depths(now));
        let mut model = read.write().expect("read model lock");
        for id in touched {
            match self.state.book.payments.get(&id) {
                Some(record) => {
                    model.payments.insert(id, record.clone());
                    if let Some(route) = self.routes.get(&id) {
                        model.routes.insert(id, route.clone());
                    }
                }
                None => {
                    model.payments.remove(&id);
                    model.routes.remove(&id);
                    self.routes.remove(&id);
                }
            };
        }
        for id in touched_batches {
            match self.state.book.batches.get(&id) {
                Some(record) => model.batches.insert(id, record.clone()),
                None => model.batches.remove(&id),
            };
        }
        for id in touched_settlements {
            match self.state.book.settlements.get(&id) {
                Some(record) => model.settlements.insert(id, record.clone()),
                None => model.settlements.remove(&id),
            };
        }
        if *model.access != self.state.access {
            model.access = Arc::new(self.state.access.clone());
        }
        if model.settled != self.settled_totals {
            model.settled = self.settled_totals.clone();
        }
        if *model.guards != self.state.guards {
            model.guards = Arc::new(self.state.guards.clone());
        }
        if model.policy_version != self.policy_version {
            model.policy_version = self.policy_version;
            model.policy = Arc::new(PolicyView {
                classes: self.config.queue.classes.clone(),
                urgent: self.config.state.urgent.clone(),
                weights: Some(self.config.weights),
                rules: self.config.rules.clone(),
            });
        }
        model.as_of = now;
        model.tip = self.applied();
        model.lag = self.lag();
        // Commands go to the coordinator: a node acting only on rails stands by for them.
        model.standby = self.standby.is_some() || !self.coordinates();
        model.stopped = self.stopped.clone();
        model.counts = self.state.book.counts().clone();
        model.outbox = self.state.outbox.len();
        model.last_reconciliation = self.last_reconciliation.clone();
        model.differences_found = self.differences_found;
        if model.flagged_version != self.flagged_version {
            model.flagged_version = self.flagged_version;
            model.flagged = self.flagged.clone();
        }
        let previous: BTreeMap<RailId, usize> = model.rails.iter().map(|r| (r.rail, r.queued)).collect();
        model.rails = self
            .rails
            .iter()
            .map(|rail| {
                let caps = rail.capabilities();
                let breaker = &self.breakers[&caps.rail];
                let queued = match &depths {
                    Some(depths) => depths.rails.get(&caps.rail).map_or(0, |d| d.queued),
                    None => previous.get(&caps.rail).copied().unwrap_or(0),
                };
                RailView {
                    rail: caps.rail,
                    network: caps.network,
                    paused: self.state.paused.contains(&caps.rail),
                    breaker: breaker.state(now),
                    success_permille: breaker.success_permille(),
                    queued,
                    finality_expected_ms: caps.finality_expected_ms,
                    rate_per_second: self
                        .config
                        .queue
                        .rail_limits
                        .get(&caps.rail)
                        .unwrap_or(&self.config.queue.rail_limit)
                        .per_second,
                }
            })
            .collect();
        model.pools = self
            .state
            .pools
            .configured()
            .map(|(rail, asset)| {
                let pools = &self.state.pools;
                let config = pools.config(rail, asset);
                PoolView {
                    rail,
                    asset,
                    available: pools.available(rail, asset),
                    reserved: pools.reserved(rail, asset),
                    min: config.map_or(Amount::ZERO, |c| c.min),
                    target: config.map_or(Amount::ZERO, |c| c.target),
                    max: config.map_or(Amount::ZERO, |c| c.max),
                }
            })
            .collect();
        if let Some(depths) = depths {
            model.depths = depths;
        }
    }
}
