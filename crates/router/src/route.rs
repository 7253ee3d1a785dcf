//! Choosing a rail for a payment: eligibility, then a score, with every rail's verdict kept
//! as the decision's reasons.

use std::collections::BTreeMap;

use model::{Amount, Asset, Capabilities, MerchantId, Payment, PaymentId, RailId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerState;

/// How much each part of the score weighs; lower scores win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// Per unit of the engine's fee cost estimate (micro-units of a reference currency).
    pub fee: u64,
    /// Per second of expected time to finality.
    pub time: u64,
    /// Per permille of recent failures.
    pub failure: u64,
    /// Added when the rail is expected to finalise after the payment's deadline.
    pub deadline_miss: u64,
    /// Per place down an asset's preference list.
    pub preference: u64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights { fee: 1, time: 100, failure: 50, deadline_miss: 1_000_000, preference: 10_000 }
    }
}

pub use model::Rule;

/// What the router knows of a rail at decision time; the engine fills it in.
#[derive(Clone, Copy, Debug)]
pub struct RailState<'a> {
    pub capabilities: &'a Capabilities,
    pub breaker: BreakerState,
    /// The engine's fee estimate for one payout on this rail (reference micro-units).
    pub fee_cost: u64,
    /// The fee asset reserved per payout (the pool must hold it too).
    pub fee_reserve: Amount,
    pub success_permille: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub total: u64,
    pub fee: u64,
    pub time: u64,
    pub failure: u64,
    pub preference: u64,
    pub misses_deadline: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ineligible {
    AssetUnsupported,
    NetworkNotAllowed,
    BelowMinimum {
        minimum: Amount,
    },
    AboveMaximum {
        maximum: Amount,
    },
    PoolShort {
        asset: Asset,
        available: Amount,
        needed: Amount,
    },
    BreakerOpen,
    /// Rule `rule` (its index in the configuration) keeps this payment off the rail.
    ExcludedByRule {
        rule: usize,
    },
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ineligible::AssetUnsupported => write!(f, "does not carry the asset"),
            Ineligible::NetworkNotAllowed => write!(f, "not on a network the payment allows"),
            Ineligible::BelowMinimum { minimum } => write!(f, "the amount is below its minimum of {minimum}"),
            Ineligible::AboveMaximum { maximum } => write!(f, "the amount is above its maximum of {maximum}"),
            Ineligible::PoolShort { asset, available, needed } => {
                write!(f, "its {asset} pool is short ({available} available, {needed} needed)")
            }
            Ineligible::BreakerOpen => write!(f, "its breaker is open (or an operator paused it)"),
            Ineligible::ExcludedByRule { rule } => write!(f, "routing rule {rule} excludes it"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Eligible(Score),
    Ineligible(Ineligible),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RailVerdict {
    pub rail: RailId,
    pub verdict: Verdict,
}

/// A routing decision and its reasons: every rail considered, and why the winner won (the
/// lowest total score; ties go to the rail listed first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub payment: PaymentId,
    pub chosen: Option<RailId>,
    pub rails: Vec<RailVerdict>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("router rule {index}: {problem}")]
pub struct RuleError {
    pub index: usize,
    pub problem: String,
}

/// A value per pool (rail, asset) while deciding: a rail set has a handful of pools, so a
/// list searched in order is cheaper than hashing the key several times per payment.
#[derive(Debug)]
struct PerPool<V>(Vec<((RailId, Asset), V)>);

impl<V> Default for PerPool<V> {
    fn default() -> Self {
        PerPool(Vec::new())
    }
}

impl<V: Copy> PerPool<V> {
    fn get(&self, pool: (RailId, Asset)) -> Option<V> {
        self.0.iter().find(|(key, _)| *key == pool).map(|(_, value)| *value)
    }

    fn entry(&mut self, pool: (RailId, Asset), first: impl FnOnce() -> V) -> &mut V {
        let at = match self.0.iter().position(|(key, _)| *key == pool) {
            Some(at) => at,
            None => {
                self.0.push((pool, first()));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }
}

/// The scoring router. Rules are indexed by merchant and asset once, so a decision looks only
/// at the rules that can apply to its payment.
#[derive(Debug)]
pub struct Router {
    weights: Weights,
    rules: Vec<Rule>,
    by_merchant: BTreeMap<MerchantId, Vec<usize>>,
    by_asset: BTreeMap<Asset, Vec<usize>>,
}

impl Decision {
    /// The decision in words, for the people who ask why a payment went where it went (or
    /// waits): the chosen rail and its score's parts, the others' scores, and each rail that
    /// could not take it with the reason.
    pub fn explain(&self) -> String {
        let score = |s: &Score| {
            let late = if s.misses_deadline { ", misses the deadline" } else { "" };
            format!(
                "score {} (fee {}, time {}, failures {}, preference {}{late})",
                s.total, s.fee, s.time, s.failure, s.preference
            )
        };
        let mut parts = Vec::new();
        for verdict in &self.rails {
            let chosen = self.chosen == Some(verdict.rail);
            parts.push(match &verdict.verdict {
                Verdict::Eligible(s) if chosen => format!("chose {}: {}", verdict.rail, score(s)),
                Verdict::Eligible(s) => format!("{}: {}", verdict.rail, score(s)),
                Verdict::Ineligible(why) => format!("{}: {why}", verdict.rail),
            });
        }
        if self.chosen.is_none() {
            parts.insert(0, "no rail can take it now".to_owned());
        }
        parts.join("; ")
    }
}

impl Router {
    pub fn new(weights: Weights, rules: Vec<Rule>) -> Result<Router, RuleError> {
        let mut router = Router { weights, rules, by_merchant: BTreeMap::new(), by_asset: BTreeMap::new() };
        for (index, rule) in router.rules.iter().enumerate() {
            let rails = match rule {
                Rule::MerchantOnly { merchant, rails } => {
                    router.by_merchant.entry(*merchant).or_default().push(index);
                    rails
                }
                Rule::AmountAtLeastOnly { asset, rails, .. } | Rule::AssetPrefers { asset, rails } => {
                    router.by_asset.entry(*asset).or_default().push(index);
                    rails
                }
            };
            if rails.is_empty() {
                return Err(RuleError { index, problem: "lists no rails".into() });
            }
        }
        Ok(router)
    }

    /// Decides a rail for `payment` (whose effective deadline is `deadline`) among `rails`.
    /// `available` gives a pool's spendable balance for (rail, asset).
    pub fn decide(
        &self,
        payment: &Payment,
        deadline: Timestamp,
        rails: &[RailState<'_>],
        available: &dyn Fn(RailId, Asset) -> Amount,
        now: Timestamp,
    ) -> Decision {
        let merchant_rules = self.by_merchant.get(&payment.merchant).map_or(&[][..], Vec::as_slice);
        let asset_rules = self.by_asset.get(&payment.asset).map_or(&[][..], Vec::as_slice);
        let mut verdicts = Vec::with_capacity(rails.len());
        let mut best: Option<(u64, usize)> = None;
        for (i, rail) in rails.iter().enumerate() {
            let verdict = match self.ineligible(payment, rail, merchant_rules, asset_rules, available) {
                Some(reason) => Verdict::Ineligible(reason),
                None => {
                    let score = self.score(deadline, rail, asset_rules, now);
                    if best.is_none_or(|(total, _)| score.total < total) {
                        best = Some((score.total, i));
                    }
                    Verdict::Eligible(score)
                }
            };
            verdicts.push(RailVerdict { rail: rail.capabilities.rail, verdict });
        }
        Decision { payment: payment.id, chosen: best.map(|(_, i)| rails[i].capabilities.rail), rails: verdicts }
    }

    /// Decides many payments at once, each seeing the pools as the decisions before it left
    /// them: a rail's liquidity is counted once, not once per payment. Deciding payments one
    /// by one against the same balances let a batch of them exceed a pool that each fitted
    /// alone, so the batch's reservation failed and the same choice repeated forever (found
    /// by the router simulation).
    pub fn decide_all(
        &self,
        payments: &[(&Payment, Timestamp)],
        rails: &[RailState<'_>],
        available: &dyn Fn(RailId, Asset) -> Amount,
        now: Timestamp,
    ) -> Vec<Decision> {
        let mut used: PerPool<Amount> = PerPool::default();
        let mut chosen: PerPool<usize> = PerPool::default();
        // What each pool holds before these decisions, asked once per pool rather than once
        // per payment and rail (`available` reads the ledger, and derives an account id).
        let mut before: PerPool<Amount> = PerPool::default();
        for rail in rails {
            let caps = rail.capabilities;
            for asset in caps.assets.iter().chain(std::iter::once(&caps.fee_asset)) {
                before.entry((caps.rail, *asset), || available(caps.rail, *asset));
            }
        }
        let mut decisions = Vec::with_capacity(payments.len());
        for (payment, deadline) in payments {
            let left = |rail: RailId, asset: Asset| {
                let spent = used.get((rail, asset)).unwrap_or(Amount::ZERO);
                let held = before.get((rail, asset)).unwrap_or_else(|| available(rail, asset));
                held.checked_sub(spent).unwrap_or(Amount::ZERO)
            };
            let decision = self.decide(payment, *deadline, rails, &left, now);
            if let Some(rail) = decision.chosen.and_then(|r| rails.iter().find(|s| s.capabilities.rail == r)) {
                let caps = rail.capabilities;
                // A settlement carries up to `batch_size_max` payments of one asset and
                // reserves one fee: the fee is counted once per settlement these make.
                let count = chosen.entry((caps.rail, payment.asset), || 0);
                *count += 1;
                let fee = if (*count - 1).is_multiple_of(caps.batch_size_max.max(1)) {
                    rail.fee_reserve
                } else {
                    Amount::ZERO
                };
                for (asset, amount) in [(payment.asset, payment.amount), (caps.fee_asset, fee)] {
                    let entry = used.entry((caps.rail, asset), || Amount::ZERO);
                    *entry = entry.checked_add(amount).unwrap_or(Amount::MAX);
                }
            }
            decisions.push(decision);
        }
        decisions
    }

    fn ineligible(
        &self,
        payment: &Payment,
        rail: &RailState<'_>,
        merchant_rules: &[usize],
        asset_rules: &[usize],
        available: &dyn Fn(RailId, Asset) -> Amount,
    ) -> Option<Ineligible> {
        let caps = rail.capabilities;
        if !caps.assets.contains(&payment.asset) {
            return Some(Ineligible::AssetUnsupported);
        }
        if !payment.networks.contains(&caps.network) || !payment.destination.is_valid_on(caps.network) {
            return Some(Ineligible::NetworkNotAllowed);
        }
        if payment.amount < caps.amount_min {
            return Some(Ineligible::BelowMinimum { minimum: caps.amount_min });
        }
        if payment.amount > caps.amount_max {
            return Some(Ineligible::AboveMaximum { maximum: caps.amount_max });
        }
        if matches!(rail.breaker, BreakerState::Open { .. }) {
            return Some(Ineligible::BreakerOpen);
        }
        for &index in merchant_rules.iter().chain(asset_rules) {
            let excluded = match &self.rules[index] {
                Rule::MerchantOnly { rails, .. } => !rails.contains(&caps.rail),
                Rule::AmountAtLeastOnly { amount, rails, .. } => {
                    payment.amount >= *amount && !rails.contains(&caps.rail)
                }
                Rule::AssetPrefers { .. } => false,
            };
            if excluded {
                return Some(Ineligible::ExcludedByRule { rule: index });
            }
        }
        self.pool_short(payment, rail, available)
    }

    fn pool_short(
        &self,
        payment: &Payment,
        rail: &RailState<'_>,
        available: &dyn Fn(RailId, Asset) -> Amount,
    ) -> Option<Ineligible> {
        let caps = rail.capabilities;
        let same_asset = payment.asset == caps.fee_asset;
        let needed = if same_asset {
            payment.amount.checked_add(rail.fee_reserve).unwrap_or(Amount::MAX)
        } else {
            payment.amount
        };
        let have = available(caps.rail, payment.asset);
        if have < needed {
            return Some(Ineligible::PoolShort { asset: payment.asset, available: have, needed });
        }
        if !same_asset {
            let have = available(caps.rail, caps.fee_asset);
            if have < rail.fee_reserve {
                return Some(Ineligible::PoolShort {
                    asset: caps.fee_asset,
                    available: have,
                    needed: rail.fee_reserve,
                });
            }
        }
        None
    }

    fn score(&self, deadline: Timestamp, rail: &RailState<'_>, asset_rules: &[usize], now: Timestamp) -> Score {
        let w = &self.weights;
        let caps = rail.capabilities;
        let fee = rail.fee_cost.saturating_mul(w.fee);
        let time = (caps.finality_expected_ms / 1000).saturating_mul(w.time);
        let failure = u64::from(1000u32.saturating_sub(rail.success_permille)).saturating_mul(w.failure);
        let misses_deadline = now.saturating_add_ms(caps.finality_expected_ms) > deadline;
        let place = asset_rules
            .iter()
            .find_map(|&i| match &self.rules[i] {
                Rule::AssetPrefers { rails, .. } => {
                    Some(rails.iter().position(|r| *r == caps.rail).unwrap_or(rails.len()))
                }
                _ => None,
            })
            .unwrap_or(0);
        let preference = (place as u64).saturating_mul(w.preference);
        let total = fee
            .saturating_add(time)
            .saturating_add(failure)
            .saturating_add(preference)
            .saturating_add(if misses_deadline { w.deadline_miss } else { 0 });
        Score { total, fee, time, failure, preference, misses_deadline }
    }
}
