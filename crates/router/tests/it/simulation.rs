//! A property-tested simulation: payments are routed, batched, reserved from pools, signed,
//! broadcast and watched on three simulated chains whose settlements meet random fates
//! (confirm, revert, drop, stuck, foreign spend of the nonce, reorg) and random rail outages;
//! the router's anomaly rules decide what happens next, and every decision goes through the
//! payment state machine (`model::Book`) and the pools' ledger.
//!
//! Checked at every step: the book accepts every event (so no payment is in two live
//! settlements and nothing is reissued without a proof of death), the ledger balances and no
//! pool is negative, and no payment is paid on chain more than once. Checked at the end (the
//! faults stop after a while): every payment is settled or held, and the ledger's paid-out
//! total is exactly the settled payments.

use std::collections::BTreeMap;

use model::*;
use proptest::prelude::*;
use router::*;

use crate::{T0, caps, evm, payment};

#[derive(Clone, Copy, Debug)]
enum Fate {
    Confirm(u64),
    Revert(u64),
    DropOnce,
    Stuck,
    Foreign(u64),
    ReorgOnce,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        4 => (0u64..3).prop_map(Fate::Confirm),
        1 => (0u64..3).prop_map(Fate::Revert),
        1 => Just(Fate::DropOnce),
        1 => Just(Fate::Stuck),
        1 => (0u64..3).prop_map(Fate::Foreign),
        1 => Just(Fate::ReorgOnce),
    ]
}

#[derive(Debug)]
struct Version {
    txid: [u8; 32],
    cancel: bool,
    fate: Fate,
    since: u64,
    dropped: bool,
}

#[derive(Clone, Copy, Debug)]
struct Mined {
    txid: [u8; 32],
    step: u64,
    reverted: bool,
    foreign: bool,
}

#[derive(Debug)]
struct Live {
    id: SettlementId,
    rail: usize,
    versions: Vec<Version>,
    mined: Option<Mined>,
    reorged: bool,
    seen_in_block: Option<[u8; 32]>,
    last_action_at: Timestamp,
    bumps: u32,
    rebroadcasts: u32,
    cancelling: bool,
    held: bool,
    /// False once railyard is done with it (final or dead); the chain goes on regardless.
    watching: bool,
    legs: Vec<PaymentId>,
}

fn hash(parts: &[u64]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for p in parts {
        hasher.update(&p.to_le_bytes());
    }
    *hasher.finalize().as_bytes()
}

struct Sim {
    book: Book,
    pools: Pools,
    breakers: Vec<Breaker>,
    batcher: Batcher,
    router: Router,
    rails: Vec<Capabilities>,
    live: Vec<Live>,
    fates: Vec<Fate>,
    fate_next: usize,
    next_id: u64,
    calm_after: u64,
    /// Payments a non-foreign, non-reverted, non-cancel version currently pays on chain.
    paid_on_chain: BTreeMap<PaymentId, u32>,
}

impl Sim {
    fn apply(&mut self, event: Event) -> Result<(), TestCaseError> {
        self.book.apply(&event).map_err(|e| TestCaseError::fail(format!("book refused {event:?}: {e}")))
    }

    fn next_fate(&mut self, step: u64) -> Fate {
        if step >= self.calm_after {
            return Fate::Confirm(0);
        }
        let fate = self.fates[self.fate_next % self.fates.len()];
        self.fate_next += 1;
        fate
    }

    fn new_txid(&mut self) -> [u8; 32] {
        self.next_id += 1;
        hash(&[0x7a, self.next_id])
    }

    fn route_and_plan(&mut self, step: u64, now: Timestamp) -> Result<(), TestCaseError> {
        let queued: Vec<Payment> = self
            .book
            .payments
            .values()
            .filter(|r| r.state == PaymentState::Queued)
            .map(|r| r.payment.clone())
            .collect();
        let waiting: Vec<PaymentId> = queued.iter().map(|p| p.id).filter(|id| self.in_batcher(*id)).collect();
        let states: Vec<RailState<'_>> = self
            .rails
            .iter()
            .zip(&self.breakers)
            .map(|(c, b)| RailState {
                capabilities: c,
                breaker: b.state(now),
                fee_cost: 10,
                fee_reserve: Amount::new(10),
                success_permille: b.success_permille(),
            })
            .collect();
        let deadline = now.saturating_add_ms(3_600_000);
        let candidates: Vec<(&Payment, Timestamp)> =
            queued.iter().filter(|p| !waiting.contains(&p.id)).map(|p| (p, deadline)).collect();
        let pools = &self.pools;
        let decisions = self.router.decide_all(&candidates, &states, &|r, a| pools.available(r, a), now);
        for ((p, _), decision) in candidates.iter().zip(decisions) {
            if let Some(rail) = decision.chosen {
                self.batcher.add(rail, p.asset, 3, p.id, p.class, now);
            }
        }
        for flush in self.batcher.flush(now) {
            self.plan(flush, step, now)?;
        }
        Ok(())
    }

    fn in_batcher(&self, _id: PaymentId) -> bool {
        false // the batcher is flushed every step (window 0), so nothing waits across steps
    }

    fn plan(&mut self, flush: Flush, step: u64, now: Timestamp) -> Result<(), TestCaseError> {
        let rail = self.rails.iter().position(|c| c.rail == flush.rail).unwrap();
        if !self.breakers[rail].admit(now) {
            return Ok(());
        }
        let legs: Vec<Leg> = flush
            .payments
            .iter()
            .map(|id| {
                let p = &self.book.payments[id].payment;
                Leg { payment: *id, destination: p.destination.clone(), amount: p.amount }
            })
            .collect();
        let total = Amount::try_sum(legs.iter().map(|l| l.amount)).unwrap();
        self.next_id += 1;
        let id = SettlementId(u128::from(self.next_id));
        let reserve = Reserve {
            settlement: id,
            rail: flush.rail,
            asset: flush.asset,
            amount: total,
            fee_asset: Asset::ETH,
            fee: Amount::new(10),
            urgent: false,
        };
        if self.pools.reserve(&reserve).is_err() {
            return Ok(()); // not enough liquidity now: the payments stay queued
        }
        let settlement = Settlement {
            id,
            rail: flush.rail,
            network: self.rails[rail].network,
            asset: flush.asset,
            legs,
            fee_asset: Asset::ETH,
            fee_reserved: Amount::new(10),
        };
        let txid = self.new_txid();
        let tx = SignedTx {
            txid,
            raw: vec![],
            spend: Spend::Nonce { sender: [u8::try_from(rail).unwrap(); 20], nonce: self.next_id },
            fee: Amount::new(10),
        };
        self.apply(Event::SettlementPlanned { settlement: settlement.clone(), at: now })?;
        self.apply(Event::SettlementSigned { settlement: id, tx, at: now })?;
        self.apply(Event::SettlementBroadcast { settlement: id, txid, at: now })?;
        let fate = self.next_fate(step);
        self.live.push(Live {
            id,
            rail,
            versions: vec![Version { txid, cancel: false, fate, since: step, dropped: false }],
            mined: None,
            reorged: false,
            seen_in_block: None,
            last_action_at: now,
            bumps: 0,
            rebroadcasts: 0,
            cancelling: false,
            held: false,
            watching: true,
            legs: flush.payments,
        });
        Ok(())
    }
}

/// Moves one settlement's chain forward a step: at most one version ever spends the nonce.
fn chain_step(live: &mut Live, step: u64, paid: &mut BTreeMap<PaymentId, u32>) {
    if let Some(mined) = live.mined {
        let reorg = live.versions.iter().any(|v| v.txid == mined.txid && matches!(v.fate, Fate::ReorgOnce));
        if reorg && !live.reorged && step > mined.step {
            live.mined = None;
            live.reorged = true;
            let version = live.versions.iter_mut().find(|v| v.txid == mined.txid).unwrap();
            version.fate = Fate::Confirm(1);
            version.since = step;
            if !mined.reverted && !version.cancel {
                for p in &live.legs {
                    *paid.get_mut(p).unwrap() -= 1;
                }
            }
        }
        return;
    }
    for version in &mut live.versions {
        // Dropped is not dead: some node kept it, and it comes back.
        if version.dropped && step >= version.since + 6 {
            version.dropped = false;
        }
        if version.dropped {
            continue;
        }
        let due = |delay: u64| step >= version.since + delay;
        let outcome = match version.fate {
            Fate::Confirm(d) if due(d) => Some((version.txid, false, false)),
            Fate::ReorgOnce => Some((version.txid, false, false)),
            Fate::Revert(d) if due(d) => Some((version.txid, true, false)),
            Fate::Foreign(d) if due(d) => Some((hash(&[0xf0, step, version.since]), false, true)),
            Fate::DropOnce => {
                version.dropped = true;
                version.fate = Fate::Confirm(0);
                None
            }
            _ => None,
        };
        if let Some((txid, reverted, foreign)) = outcome {
            live.mined = Some(Mined { txid, step, reverted, foreign });
            if !reverted && !foreign && !version.cancel {
                for p in &live.legs {
                    *paid.entry(*p).or_default() += 1;
                }
            }
            return;
        }
    }
}

fn observe(live: &Live, step: u64) -> Observation {
    match live.mined {
        Some(m) if m.foreign => Observation::Replaced { by: m.txid, depth: step - m.step + 1 },
        Some(m) => {
            let (txid, block, depth) = (m.txid, hash(&[0xb1, m.step, u64::from(live.reorged)]), step - m.step + 1);
            if m.reverted {
                Observation::Reverted { txid, block, depth }
            } else {
                Observation::Confirmed { txid, block, depth }
            }
        }
        None if live.seen_in_block.is_some() => Observation::ReorgedOut,
        None if live.versions.iter().all(|v| v.dropped) => Observation::Dropped,
        None => Observation::Pending,
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    amounts: Vec<(u128, bool)>,
    fates: Vec<Fate>,
    outages: Vec<(usize, u64, u64)>,
    tight_pool: u128,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec((10u128..500, any::<bool>()), 1..20),
        prop::collection::vec(fate(), 1..12),
        prop::collection::vec((0usize..3, 0u64..50, 1u64..15), 0..3),
        0u128..3_000,
    )
        .prop_map(|(amounts, fates, outages, tight_pool)| Scenario { amounts, fates, outages, tight_pool })
}

const STEP_MS: u64 = 10_000;
const STEPS: u64 = 200;

fn run(scenario: &Scenario) -> Result<(), TestCaseError> {
    let rails = vec![caps("alpha", 1001, 20_000), caps("beta", 1002, 20_000), caps("gamma", 1003, 40_000)];
    let networks: Vec<Network> = rails.iter().map(|c| c.network).collect();
    let pool_configs: Vec<PoolConfig> = rails
        .iter()
        .map(|c| PoolConfig {
            rail: c.rail,
            asset: Asset::USDC,
            min: Amount::ZERO,
            target: Amount::new(5_000),
            max: Amount::new(100_000),
        })
        .collect();
    let fee_pools: Vec<(RailId, Asset)> = rails.iter().map(|c| (c.rail, Asset::ETH)).collect();
    let mut pools = Pools::new(&pool_configs, &fee_pools).unwrap();
    for (i, c) in rails.iter().enumerate() {
        let usdc = if i == 1 { scenario.tight_pool } else { 20_000 };
        if usdc > 0 {
            pools.fund(c.rail, Asset::USDC, Amount::new(usdc), ledger::TransferId(100 + i as u128)).unwrap();
        }
        pools.fund(c.rail, Asset::ETH, Amount::new(1_000_000), ledger::TransferId(200 + i as u128)).unwrap();
    }
    let policy = BatchPolicy { windows_ms: BTreeMap::new(), window_default_ms: 0, immediate: vec![] };
    let breaker =
        BreakerConfig { failures_to_open: 2, open_ms: 30_000, half_open_probes: 1, successes_to_close: 1, window: 16 };
    let mut sim = Sim {
        book: Book::default(),
        pools,
        breakers: vec![Breaker::new(breaker); 3],
        batcher: Batcher::new(policy),
        router: Router::new(Weights::default(), vec![]).unwrap(),
        rails,
        live: Vec::new(),
        fates: scenario.fates.clone(),
        fate_next: 0,
        next_id: 1_000,
        calm_after: 80,
        paid_on_chain: BTreeMap::new(),
    };
    let payments: Vec<Payment> = scenario
        .amounts
        .iter()
        .enumerate()
        .map(|(i, (amount, _))| payment(i as u128 + 1, 1, *amount, &networks))
        .collect();
    sim.apply(Event::BatchAccepted {
        batch: BatchId(1),
        merchant: MerchantId(1),
        idempotency_key: "k".into(),
        body_hash: [0; 32],
        count: u32::try_from(payments.len()).unwrap(),
        payments: payments.clone(),
        at: T0,
    })?;
    for p in &payments {
        sim.apply(Event::PaymentQueued { payment: p.id, at: T0 })?;
    }
    let anomaly = AnomalyPolicy { stuck_after_ms: 3 * STEP_MS, bump_budget: 1, rebroadcasts_max: 2, attempts_max: 3 };
    for step in 0..STEPS {
        let now = T0.saturating_add_ms(step * STEP_MS);
        sim.route_and_plan(step, now)?;
        for index in 0..sim.live.len() {
            let rail = sim.live[index].rail;
            chain_step(&mut sim.live[index], step, &mut sim.paid_on_chain);
            if !sim.live[index].watching {
                continue;
            }
            let outage = step < sim.calm_after
                && scenario.outages.iter().any(|&(r, start, len)| r == rail && (start..start + len).contains(&step));
            if outage {
                sim.breakers[rail].record(Outcome::Failure, now);
                continue;
            }
            sim.breakers[rail].record(Outcome::Success, now);
            if react(&mut sim, index, step, now, &anomaly)? {
                sim.live[index].watching = false;
            }
        }
        check_step(&sim)?;
    }
    check_end(&sim)
}

/// Applies the chain's observation and the anomaly rule's decision; true when the settlement
/// reached an end (final or dead).
fn react(
    sim: &mut Sim,
    index: usize,
    step: u64,
    now: Timestamp,
    policy: &AnomalyPolicy,
) -> Result<bool, TestCaseError> {
    let observation = observe(&sim.live[index], step);
    let id = sim.live[index].id;
    let book_state = sim.book.settlements[&id].state;
    if let Observation::Confirmed { txid, block, depth } = observation {
        sim.apply(Event::SettlementConfirmed { settlement: id, txid, depth: u32::try_from(depth).unwrap(), at: now })?;
        sim.live[index].seen_in_block = Some(block);
    }
    let live = &sim.live[index];
    let watch = SettlementWatch {
        observation,
        confirmations_final: 2,
        last_action_at: live.last_action_at,
        bumps: live.bumps,
        rebroadcasts: live.rebroadcasts,
        cancelling: live.cancelling,
        cancels: live.versions.iter().filter(|v| v.cancel).map(|v| v.txid).collect(),
        fee_above_cap: false,
    };
    match assess(&watch, policy, now) {
        Action::Wait => {}
        Action::Rebroadcast => {
            let live = &mut sim.live[index];
            live.versions.iter_mut().for_each(|v| v.dropped = false);
            live.rebroadcasts += 1;
            live.last_action_at = now;
        }
        Action::Bump | Action::Cancel
            if !matches!(book_state, SettlementState::Broadcast | SettlementState::Signed) => {}
        action @ (Action::Bump | Action::Cancel) => {
            let cancel = action == Action::Cancel;
            let txid = sim.new_txid();
            let fate = if cancel { Fate::Confirm(0) } else { sim.next_fate(step) };
            let spend = sim.book.settlements[&id].txs[0].spend.clone();
            let tx = SignedTx { txid, raw: vec![], spend, fee: Amount::new(10) };
            let event = if cancel {
                Event::SettlementCancelling { settlement: id, tx, at: now }
            } else {
                Event::SettlementReplaced { settlement: id, tx, at: now }
            };
            sim.apply(event)?;
            let live = &mut sim.live[index];
            live.versions.push(Version { txid, cancel, fate, since: step, dropped: false });
            live.last_action_at = now;
            if cancel {
                live.cancelling = true;
            } else {
                live.bumps += 1;
            }
        }
        Action::Finalize { txid } => {
            sim.apply(Event::SettlementFinal { settlement: id, txid, fee_paid: Amount::new(7), at: now })?;
            sim.pools.post(id, Amount::new(7)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            return Ok(true);
        }
        Action::RollBack { proof } => {
            sim.apply(Event::SettlementDead { settlement: id, proof, at: now })?;
            sim.pools.void(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for payment in sim.live[index].legs.clone() {
                sim.apply(Event::PaymentReissued { payment, previous: id, at: now })?;
                sim.apply(Event::PaymentQueued { payment, at: now })?;
            }
            return Ok(true);
        }
        Action::WatchAgain => {
            sim.live[index].seen_in_block = None;
            if matches!(book_state, SettlementState::Confirmed { .. })
                || matches!(sim.book.settlements[&id].state, SettlementState::Confirmed { .. })
            {
                sim.apply(Event::SettlementReorged { settlement: id, at: now })?;
            }
        }
        Action::Hold { reason } => {
            if !sim.live[index].held {
                sim.live[index].held = true;
                for payment in sim.live[index].legs.clone() {
                    sim.apply(Event::PaymentHeld { payment, reason: reason.clone(), at: now })?;
                }
            }
        }
    }
    Ok(false)
}

fn check_step(sim: &Sim) -> Result<(), TestCaseError> {
    sim.pools.ledger().verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
    for account in sim.pools.ledger().accounts() {
        prop_assert!(account.flags_hold(), "account {} broke its flags", account.id);
    }
    let mut live_count: BTreeMap<PaymentId, u32> = BTreeMap::new();
    for record in sim.book.settlements.values() {
        if !matches!(record.state, SettlementState::Final | SettlementState::Dead | SettlementState::Released) {
            for leg in &record.settlement.legs {
                *live_count.entry(leg.payment).or_default() += 1;
            }
        }
    }
    for (payment, count) in live_count {
        prop_assert!(count <= 1, "payment {payment} is in {count} live settlements");
    }
    for (payment, count) in &sim.paid_on_chain {
        prop_assert!(*count <= 1, "payment {payment} is paid {count} times on chain");
    }
    Ok(())
}

fn check_end(sim: &Sim) -> Result<(), TestCaseError> {
    let mut settled_total = Amount::ZERO;
    // Finished payments have left the book; the simulation never takes what it retired.
    for record in sim.book.payments.values().chain(&sim.book.retired().payments) {
        let paid = sim.paid_on_chain.get(&record.payment.id).copied().unwrap_or(0);
        match record.state {
            PaymentState::Settled => {
                prop_assert_eq!(paid, 1, "settled payment {} must be paid exactly once", record.payment.id);
                settled_total = settled_total.checked_add(record.payment.amount).unwrap();
            }
            PaymentState::Held { .. } => prop_assert!(paid <= 1),
            other => {
                let last = record.settlement.map(|s| (s, sim.book.settlements.get(&s).map(|r| r.state)));
                prop_assert!(
                    false,
                    "payment {} ended {other} (paid {paid}, attempt {}, last settlement {last:?})",
                    record.payment.id,
                    record.attempt
                )
            }
        }
    }
    let paid_out = sim.pools.ledger().account_of(ledger::Owner::PaidOut, Asset::USDC).map(|a| a.balance.credits_posted);
    prop_assert_eq!(
        paid_out.unwrap_or(Amount::ZERO),
        settled_total,
        "the ledger's payouts are exactly the settled payments"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn payments_are_paid_once_or_held_whatever_the_chains_do(scenario in scenario()) {
        run(&scenario)?;
    }
}

#[test]
fn evm_networks_are_distinct() {
    assert_ne!(evm(1001), evm(1002));
}
