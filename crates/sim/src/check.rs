//! The invariants, each named. `every_step` runs after every step; `outcomes` at the end of a
//! run, when every payment has settled, failed or been held.

use std::collections::{BTreeMap, BTreeSet};

use model::*;

use crate::{Sim, Violation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// The ledger balances: every transfer's debits equal its credits, per asset.
    Ledger,
    /// No payment is a leg of two settlements that are both still live.
    OneLiveSettlement,
    /// On every chain, no destination received more than its payment's amount.
    PaidAtMostOnce,
    /// A payment the engine says settled was paid exactly; one it says failed was not paid.
    OutcomeMatchesChain,
    /// A waiting payment is in exactly one place of the engine's staging.
    Staging,
    /// Every payment the engine accepted is still known after a crash.
    Acknowledged,
    /// Replaying the journal rebuilds exactly the state the engine had.
    ReplayHash,
    /// The engine stops only when its journal fails, and always starts again.
    EngineRuns,
    /// The engine opens again after every crash.
    Restarts,
    /// A new batch key is never taken for a duplicate.
    Idempotency,
    /// Once faults stop, every payment settles, fails or is held within the bound.
    Liveness,
    /// When nothing is open, the fees the ledger booked per rail equal what the chain charged.
    Fees,
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Invariant::Ledger => "ledger-balances",
            Invariant::OneLiveSettlement => "one-live-settlement-per-payment",
            Invariant::PaidAtMostOnce => "paid-at-most-once",
            Invariant::OutcomeMatchesChain => "outcome-matches-chain",
            Invariant::Staging => "one-place-per-waiting-payment",
            Invariant::Acknowledged => "acknowledged-survives-crash",
            Invariant::ReplayHash => "replay-gives-same-state",
            Invariant::EngineRuns => "engine-stops-only-on-journal-failure",
            Invariant::Restarts => "engine-restarts",
            Invariant::Idempotency => "idempotency",
            Invariant::Liveness => "liveness",
            Invariant::Fees => "fees-booked-equal-fees-paid",
        };
        f.write_str(name)
    }
}

pub(crate) fn every_step(sim: &mut Sim) -> Result<(), Violation> {
    let engine = sim.engine.as_ref().expect("open between steps");
    let state = engine.state();
    if let Err(error) = state.pools.ledger().verify() {
        return Err(sim.violation(Invariant::Ledger, error.to_string()));
    }
    if let Err(error) = engine.check_staging() {
        return Err(sim.violation(Invariant::Staging, error));
    }
    let mut live: BTreeSet<PaymentId> = BTreeSet::new();
    for record in state.book.settlements.values() {
        if matches!(record.state, SettlementState::Final | SettlementState::Dead | SettlementState::Released) {
            continue;
        }
        for leg in &record.settlement.legs {
            if !live.insert(leg.payment) {
                let detail = format!("payment {} is in two live settlements", leg.payment);
                return Err(sim.violation(Invariant::OneLiveSettlement, detail));
            }
        }
    }
    for (id, expected) in &sim.accepted {
        let received = sim.world.received(&expected.destination, expected.asset);
        if received > expected.amount.units() {
            let detail = format!("payment {id}: {received} received for {}", expected.amount);
            return Err(sim.violation(Invariant::PaidAtMostOnce, detail));
        }
    }
    Ok(())
}

/// Every payment's final state, checked against the chains: settled means paid exactly (unless
/// reorgs deeper than finality were injected), failed means not paid.
pub(crate) fn outcomes(sim: &Sim) -> Result<BTreeMap<String, u64>, Violation> {
    let engine = sim.engine.as_ref().expect("open at the end");
    let mut outcomes = BTreeMap::new();
    for (id, expected) in &sim.accepted {
        let record = match engine.payment(*id) {
            Ok(Some(record)) => record,
            Ok(None) => return Err(sim.violation(Invariant::Acknowledged, format!("payment {id} is unknown"))),
            Err(error) => return Err(sim.violation(Invariant::Acknowledged, error.to_string())),
        };
        let received = sim.world.received(&expected.destination, expected.asset);
        let wrong = match record.state {
            PaymentState::Settled => !sim.options.deep_reorgs && received != expected.amount.units(),
            PaymentState::Failed => received != 0,
            _ => false,
        };
        if wrong {
            let detail = format!("payment {id} is {} but {received} of {} reached it", record.state, expected.amount);
            return Err(sim.violation(Invariant::OutcomeMatchesChain, detail));
        }
        let name = match record.state {
            PaymentState::Held { .. } => "held".to_owned(),
            state => state.to_string(),
        };
        *outcomes.entry(name).or_insert(0) += 1;
    }
    if engine.state().book.settlements.is_empty() {
        for chain in &sim.world.chains {
            let booked = engine
                .state()
                .pools
                .ledger()
                .account_of(ledger::Owner::Fees(chain.id), Asset::ETH)
                .map_or(Amount::ZERO, |a| a.balance.credits_posted);
            let paid = chain.rail.fees_paid();
            if booked != paid {
                let detail = format!("{}: the ledger booked {booked} of fees, the chain charged {paid}", chain.id);
                return Err(sim.violation(Invariant::Fees, detail));
            }
        }
    }
    Ok(outcomes)
}

/// Replays the journal at `path` from its first record (no snapshot), on its own.
pub(crate) fn replay_from_scratch(
    path: &std::path::Path,
    config: &engine::EngineConfig,
) -> Result<engine::EngineState, String> {
    use journal::Replica;
    let journal =
        journal::Journal::open(path, config.journal.clone()).map_err(|e| format!("the journal does not open: {e}"))?;
    let mut replayed = engine::Replayed::empty(&config.state);
    let mut next = 1;
    loop {
        let records = journal.read_range(next, 1_000).map_err(|e| format!("the journal does not read: {e}"))?;
        let Some(last) = records.last() else { break };
        next = last.seq + 1;
        for record in &records {
            replayed.apply(record.seq, &record.payload)?;
        }
    }
    Ok(replayed.0)
}

/// Names the first part of `live` that differs from `replayed`, if any.
pub(crate) fn differs(live: &engine::EngineState, replayed: &engine::EngineState) -> Option<String> {
    let hash = |value: &dyn erased::Hashable| value.hash();
    let parts: [(&str, [u8; 32], [u8; 32]); 6] = [
        ("book.payments", hash(&live.book.payments), hash(&replayed.book.payments)),
        ("book.settlements", hash(&live.book.settlements), hash(&replayed.book.settlements)),
        ("book.batches", hash(&live.book.batches), hash(&replayed.book.batches)),
        ("pools", hash(&live.pools), hash(&replayed.pools)),
        ("outbox", hash(&live.outbox), hash(&replayed.outbox)),
        ("paused", hash(&live.paused), hash(&replayed.paused)),
    ];
    if let Some((part, _, _)) = parts.iter().find(|(_, a, b)| a != b) {
        let first = live.book.payments.iter().find(|(id, r)| replayed.book.payments.get(id) != Some(r));
        let detail = match first {
            Some((id, r)) => format!(
                " (first payment differing: {id}, live {} attempt {}, replayed {:?})",
                r.state,
                r.attempt,
                replayed.book.payments.get(id).map(|r| (r.state, r.attempt))
            ),
            None => String::new(),
        };
        return Some(format!("{part}{detail}"));
    }
    (live.state_hash() != replayed.state_hash()).then(|| "state (in its indexes)".to_owned())
}

mod erased {
    pub(crate) trait Hashable {
        fn hash(&self) -> [u8; 32];
    }
    impl<T: serde::Serialize> Hashable for T {
        fn hash(&self) -> [u8; 32] {
            *blake3::hash(&postcard::to_stdvec(self).expect("state parts serialize")).as_bytes()
        }
    }
}
