//! Failover: when a rail's breaker opens, its queued payments move to the next eligible rail
//! where policy allows it automatically; the rest wait for the operator's drain. In-flight
//! settlements are never moved here: they stay watched on their rail (bumped, cancelled) and
//! their payments are released only by a proof of death (see `anomaly`).

use model::{Amount, Asset, Payment, PaymentId, RailId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerState;
use crate::route::{RailState, Router};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverPlan {
    pub moves: Vec<(PaymentId, RailId)>,
    /// No other eligible rail, or policy says the operator decides.
    pub held: Vec<PaymentId>,
}

/// Plans the failover of `failed`'s queued payments. `automatic` is the policy: whether a
/// payment may move without the operator.
pub fn plan_failover(
    router: &Router,
    failed: RailId,
    queued: &[(&Payment, Timestamp)],
    rails: &[RailState<'_>],
    available: &dyn Fn(RailId, Asset) -> Amount,
    automatic: &dyn Fn(&Payment) -> bool,
    now: Timestamp,
) -> FailoverPlan {
    // Whatever the caller's view, the failed rail is out for this plan.
    let others: Vec<RailState<'_>> = rails
        .iter()
        .map(|r| {
            if r.capabilities.rail == failed {
                RailState { breaker: BreakerState::Open { until: Timestamp(u64::MAX) }, ..*r }
            } else {
                *r
            }
        })
        .collect();
    let mut plan = FailoverPlan { moves: Vec::new(), held: Vec::new() };
    for (payment, deadline) in queued {
        let decision = router.decide(payment, *deadline, &others, available, now);
        match decision.chosen {
            Some(rail) if automatic(payment) => plan.moves.push((payment.id, rail)),
            _ => plan.held.push(payment.id),
        }
    }
    plan
}
