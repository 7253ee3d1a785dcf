//! Router behaviour: tables for each decision, and properties of each part over random
//! inputs (the engine's whole loop under faults is the simulator's, in `crates/sim`).

mod properties;

use std::collections::BTreeMap;

use model::*;
use router::*;

pub const T0: Timestamp = Timestamp(1_700_000_000_000);

pub fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

pub fn evm(chain: u64) -> Network {
    Network::Evm(ChainId(chain))
}

pub fn caps(rail: &str, chain: u64, finality_ms: u64) -> Capabilities {
    Capabilities {
        rail: name(rail),
        network: evm(chain),
        fee_asset: Asset::ETH,
        assets: vec![Asset::ETH, Asset::USDC],
        amount_min: Amount::new(10),
        amount_max: Amount::new(1_000_000),
        batch_size_max: 4,
        confirmations_final: 2,
        can_replace: true,
        finality_expected_ms: finality_ms,
    }
}

pub fn payment(id: u128, merchant: u64, amount: u128, networks: &[Network]) -> Payment {
    Payment {
        id: PaymentId(id),
        batch: BatchId(1),
        merchant: MerchantId(merchant),
        reference: format!("r{id}"),
        amount: Amount::new(amount),
        asset: Asset::USDC,
        destination: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", networks[0]).unwrap(),
        networks: networks.to_vec(),
        class: name("standard"),
        deadline: None,
        metadata: BTreeMap::new(),
    }
}

fn state<'a>(caps: &'a Capabilities, fee_cost: u64) -> RailState<'a> {
    RailState {
        capabilities: caps,
        breaker: BreakerState::Closed,
        fee_cost,
        fee_reserve: Amount::new(5),
        success_permille: 1000,
    }
}

fn plenty(_: RailId, _: Asset) -> Amount {
    Amount::new(10_000_000)
}

#[test]
fn cheapest_eligible_rail_wins_and_every_rail_has_a_reason() {
    let l1 = caps("ethereum", 1, 180_000);
    let base = caps("base", 8453, 4_000);
    let op = caps("optimism", 10, 4_000);
    let mut excluded = caps("arbitrum", 42161, 4_000);
    excluded.assets = vec![Asset::ETH];
    let router = Router::new(Weights::default(), vec![]).unwrap();
    let p = payment(1, 1, 500, &[Network::ETHEREUM, Network::BASE, Network::OPTIMISM]);
    let rails = [state(&l1, 100), state(&base, 300), state(&op, 200), state(&excluded, 1)];
    let decision = router.decide(&p, T0.saturating_add_ms(3_600_000), &rails, &plenty, T0);
    assert_eq!(decision.chosen, Some(name("optimism")));
    let verdict = |rail: &str| decision.rails.iter().find(|v| v.rail == name(rail)).unwrap().verdict.clone();
    assert_eq!(verdict("arbitrum"), Verdict::Ineligible(Ineligible::AssetUnsupported));
    // ethereum: cheaper fee, but 180 s to finality costs 180 * 100
    assert!(matches!(verdict("ethereum"), Verdict::Eligible(Score { fee: 100, time: 18_000, .. })));
    assert!(matches!(verdict("optimism"), Verdict::Eligible(Score { total: 600, .. })));
}

#[test]
fn eligibility_table() {
    let base = caps("base", 8453, 4_000);
    let on_base = [Network::BASE];
    let router = Router::new(
        Weights::default(),
        vec![
            Rule::MerchantOnly { merchant: MerchantId(7), rails: vec![name("ethereum")] },
            Rule::AmountAtLeastOnly { asset: Asset::USDC, amount: Amount::new(100_000), rails: vec![name("ethereum")] },
        ],
    )
    .unwrap();
    let short = |_: RailId, asset: Asset| if asset == Asset::USDC { Amount::new(50) } else { Amount::new(1_000) };
    let no_gas = |_: RailId, asset: Asset| if asset == Asset::USDC { Amount::new(1_000) } else { Amount::new(4) };
    let open = RailState { breaker: BreakerState::Open { until: T0.saturating_add_ms(1) }, ..state(&base, 1) };
    type Available<'a> = &'a dyn Fn(RailId, Asset) -> Amount;
    let cases: Vec<(Payment, RailState<'_>, Available<'_>, Option<Ineligible>)> = vec![
        (payment(1, 1, 500, &on_base), state(&base, 1), &plenty, None),
        (payment(1, 1, 500, &[Network::OPTIMISM]), state(&base, 1), &plenty, Some(Ineligible::NetworkNotAllowed)),
        (
            payment(1, 1, 5, &on_base),
            state(&base, 1),
            &plenty,
            Some(Ineligible::BelowMinimum { minimum: Amount::new(10) }),
        ),
        (
            payment(1, 1, 2_000_000, &on_base),
            state(&base, 1),
            &plenty,
            Some(Ineligible::AboveMaximum { maximum: Amount::new(1_000_000) }),
        ),
        (payment(1, 1, 500, &on_base), open, &plenty, Some(Ineligible::BreakerOpen)),
        (payment(1, 7, 500, &on_base), state(&base, 1), &plenty, Some(Ineligible::ExcludedByRule { rule: 0 })),
        (payment(1, 1, 100_000, &on_base), state(&base, 1), &plenty, Some(Ineligible::ExcludedByRule { rule: 1 })),
        (payment(1, 1, 99_999, &on_base), state(&base, 1), &plenty, None),
        (
            payment(1, 1, 500, &on_base),
            state(&base, 1),
            &short,
            Some(Ineligible::PoolShort { asset: Asset::USDC, available: Amount::new(50), needed: Amount::new(500) }),
        ),
        (
            payment(1, 1, 500, &on_base),
            state(&base, 1),
            &no_gas,
            Some(Ineligible::PoolShort { asset: Asset::ETH, available: Amount::new(4), needed: Amount::new(5) }),
        ),
    ];
    for (i, (p, rail, available, expected)) in cases.iter().enumerate() {
        let decision = router.decide(p, T0.saturating_add_ms(3_600_000), &[*rail], *available, T0);
        let got = match &decision.rails[0].verdict {
            Verdict::Eligible(_) => None,
            Verdict::Ineligible(reason) => Some(reason.clone()),
        };
        assert_eq!(&got, expected, "case {i}");
        assert_eq!(decision.chosen.is_some(), expected.is_none(), "case {i}");
    }
    assert!(Router::new(Weights::default(), vec![Rule::AssetPrefers { asset: Asset::USDC, rails: vec![] }]).is_err());
}

#[test]
fn preferences_deadlines_and_failures_shift_the_choice() {
    let base = caps("base", 8453, 4_000);
    let l1 = caps("ethereum", 1, 180_000);
    let both = [Network::BASE, Network::ETHEREUM];
    let p = payment(1, 1, 500, &both);
    let rails = [state(&base, 100), state(&l1, 100)];
    let far = T0.saturating_add_ms(3_600_000);
    let prefers_l1 = Router::new(
        Weights { time: 0, ..Weights::default() },
        vec![Rule::AssetPrefers { asset: Asset::USDC, rails: vec![name("ethereum"), name("base")] }],
    )
    .unwrap();
    assert_eq!(prefers_l1.decide(&p, far, &rails, &plenty, T0).chosen, Some(name("ethereum")));
    // The deadline is 60 s away: only base can make it.
    let router = Router::new(Weights { time: 0, ..Weights::default() }, vec![]).unwrap();
    let soon = T0.saturating_add_ms(60_000);
    let rails_l1_cheaper = [state(&base, 500), state(&l1, 100)];
    assert_eq!(router.decide(&p, far, &rails_l1_cheaper, &plenty, T0).chosen, Some(name("ethereum")));
    assert_eq!(router.decide(&p, soon, &rails_l1_cheaper, &plenty, T0).chosen, Some(name("base")));
    // A rail failing half its settlements loses to a slightly dearer healthy one.
    let flaky = RailState { success_permille: 500, ..state(&l1, 100) };
    assert_eq!(router.decide(&p, far, &[state(&base, 500), flaky], &plenty, T0).chosen, Some(name("base")));
}

#[test]
fn breaker_lifecycle() {
    let config =
        BreakerConfig { failures_to_open: 3, open_ms: 1_000, half_open_probes: 1, successes_to_close: 2, window: 8 };
    let mut breaker = Breaker::new(config);
    let at = |ms| T0.saturating_add_ms(ms);
    assert!(breaker.admit(at(0)));
    assert!(!breaker.record(Outcome::Failure, at(1)));
    assert!(!breaker.record(Outcome::Failure, at(2)));
    assert!(breaker.record(Outcome::Failure, at(3)), "the third consecutive failure opens it");
    assert_eq!(breaker.state(at(4)), BreakerState::Open { until: at(1_003) });
    assert!(!breaker.admit(at(500)));
    assert_eq!(breaker.state(at(1_003)), BreakerState::HalfOpen);
    assert!(breaker.admit(at(1_003)), "one probe");
    assert!(!breaker.admit(at(1_004)), "only one probe at a time");
    breaker.cancel_probe();
    assert!(breaker.admit(at(1_004)), "a probe not sent gives its slot back");
    assert!(breaker.record(Outcome::Failure, at(1_005)), "a failed probe reopens it");
    assert!(!breaker.admit(at(1_006)));
    assert!(breaker.admit(at(2_005)));
    breaker.record(Outcome::Success, at(2_006));
    assert!(breaker.admit(at(2_007)));
    breaker.record(Outcome::Success, at(2_008));
    assert_eq!(breaker.state(at(2_009)), BreakerState::Closed);
    assert_eq!(breaker.success_permille(), 1000, "closing forgets the outage's failures");
    breaker.record(Outcome::Failure, at(2_010));
    breaker.record(Outcome::Success, at(2_011));
    assert_eq!(breaker.success_permille(), 500, "and counts from there");
    let mut fresh = Breaker::new(config);
    assert_eq!(fresh.success_permille(), 1000);
    fresh.record(Outcome::Failure, at(0));
    fresh.record(Outcome::Success, at(1));
    fresh.record(Outcome::Failure, at(2));
    fresh.record(Outcome::Failure, at(3));
    assert_eq!(fresh.state(at(4)), BreakerState::Closed, "failures must be consecutive");
}

#[test]
fn batches_flush_when_full_when_the_window_ends_or_at_once_for_urgent() {
    let policy = BatchPolicy {
        windows_ms: BTreeMap::from([(name("bulk"), 60_000)]),
        window_default_ms: 10_000,
        immediate: vec![name("urgent")],
    };
    let mut batcher = Batcher::new(policy);
    let base = name("base");
    for i in 0..5 {
        batcher.add(base, Asset::USDC, 4, PaymentId(i), name("bulk"), T0);
    }
    let full = batcher.flush(T0);
    assert_eq!(full.len(), 1);
    assert_eq!((full[0].payments.len(), full[0].reason), (4, FlushReason::Full));
    assert_eq!(batcher.next_due(), Some(T0.saturating_add_ms(60_000)));
    assert!(batcher.flush(T0.saturating_add_ms(59_999)).is_empty());
    batcher.add(base, Asset::ETH, 4, PaymentId(9), name("standard"), T0);
    let due = batcher.flush(T0.saturating_add_ms(60_000));
    assert_eq!(
        due.iter().map(|f| (f.asset, f.reason, f.payments.len())).collect::<Vec<_>>(),
        [(Asset::ETH, FlushReason::Window, 1), (Asset::USDC, FlushReason::Window, 1)]
    );
    batcher.add(base, Asset::USDC, 4, PaymentId(20), name("bulk"), T0);
    batcher.add(base, Asset::USDC, 4, PaymentId(21), name("urgent"), T0);
    let urgent = batcher.flush(T0);
    assert_eq!(
        (urgent[0].payments.clone(), urgent[0].reason),
        (vec![PaymentId(20), PaymentId(21)], FlushReason::Immediate)
    );
    batcher.add(base, Asset::USDC, 4, PaymentId(30), name("bulk"), T0);
    assert!(batcher.remove(PaymentId(30)));
    assert_eq!(batcher.waiting(), 0);
}

fn watching(observation: Observation) -> SettlementWatch {
    SettlementWatch {
        observation,
        confirmations_final: 3,
        last_action_at: T0,
        bumps: 0,
        rebroadcasts: 0,
        cancelling: false,
        cancels: vec![],
        fee_above_cap: false,
    }
}

#[test]
fn anomaly_rules_table() {
    let policy = AnomalyPolicy { stuck_after_ms: 60_000, bump_budget: 2, rebroadcasts_max: 1, attempts_max: 3 };
    let (a, b, f) = ([0xa; 32], [0xb; 32], [0xf; 32]);
    let late = T0.saturating_add_ms(60_000);
    let cases: Vec<(SettlementWatch, Timestamp, Action)> = vec![
        (watching(Observation::Confirmed { txid: a, block: b, depth: 2, fee_paid: Amount::ZERO }), T0, Action::Wait),
        (
            watching(Observation::Confirmed { txid: a, block: b, depth: 3, fee_paid: Amount::ZERO }),
            T0,
            Action::Finalize { txid: a },
        ),
        (
            SettlementWatch {
                cancels: vec![a],
                ..watching(Observation::Confirmed { txid: a, block: b, depth: 3, fee_paid: Amount::ZERO })
            },
            T0,
            Action::RollBack { proof: DeathProof::CancelFinal { txid: a } },
        ),
        (watching(Observation::Reverted { txid: a, block: b, depth: 1, fee_paid: Amount::ZERO }), T0, Action::Wait),
        (
            watching(Observation::Reverted { txid: a, block: b, depth: 3, fee_paid: Amount::ZERO }),
            T0,
            Action::RollBack { proof: DeathProof::RevertedFinal { txid: a } },
        ),
        (
            SettlementWatch {
                cancels: vec![a],
                ..watching(Observation::Reverted { txid: a, block: b, depth: 3, fee_paid: Amount::ZERO })
            },
            T0,
            Action::RollBack { proof: DeathProof::CancelFinal { txid: a } },
        ),
        (watching(Observation::Replaced { by: f, depth: 2 }), T0, Action::Wait),
        (
            watching(Observation::Replaced { by: f, depth: 9 }),
            T0,
            Action::RollBack { proof: DeathProof::ConflictFinal { txid: f } },
        ),
        (watching(Observation::ReorgedOut), T0, Action::WatchAgain),
        (
            watching(Observation::SpenderUnknown { reason: "spent long ago".into() }),
            T0,
            Action::Hold {
                reason: "its nonce or inputs are spent, and the node cannot say by which transaction (spent long ago): check the sender's history on a full node or an explorer, then resolve it".into(),
            },
        ),
        (watching(Observation::Dropped), T0, Action::Rebroadcast),
        (
            SettlementWatch { rebroadcasts: 1, ..watching(Observation::Dropped) },
            T0,
            Action::Hold { reason: "dropped 2 times".into() },
        ),
        (watching(Observation::Pending), T0.saturating_add_ms(59_999), Action::Wait),
        (watching(Observation::Pending), late, Action::Bump),
        (SettlementWatch { bumps: 2, ..watching(Observation::Pending) }, late, Action::Cancel),
        (SettlementWatch { bumps: 2, cancelling: true, ..watching(Observation::Pending) }, T0, Action::Wait),
        (
            SettlementWatch { bumps: 2, cancelling: true, ..watching(Observation::Pending) },
            late,
            Action::Hold {
                reason: "stuck, and so is its cancel: an earlier transaction of the rail may be holding back its nonce"
                    .into(),
            },
        ),
        (
            SettlementWatch { fee_above_cap: true, ..watching(Observation::Pending) },
            late,
            Action::Hold { reason: "stuck, and the fee to unstick it is above the cap".into() },
        ),
    ];
    for (i, (watch, now, expected)) in cases.into_iter().enumerate() {
        assert_eq!(assess(&watch, &policy, now), expected, "case {i}");
    }
}

fn pools() -> Pools {
    let base = name("base");
    let config = PoolConfig {
        rail: base,
        asset: Asset::USDC,
        min: Amount::new(200),
        target: Amount::new(1_000),
        max: Amount::new(5_000),
    };
    let mut pools = Pools::new(&[config], &[(base, Asset::ETH)]).unwrap();
    pools.fund(base, Asset::USDC, Amount::new(1_000), ledger::TransferId(1)).unwrap();
    pools.fund(base, Asset::ETH, Amount::new(100), ledger::TransferId(2)).unwrap();
    pools
}

fn reserve(settlement: u128, amount: u128, fee: u128, urgent: bool) -> Reserve {
    Reserve {
        settlement: SettlementId(settlement),
        rail: name("base"),
        asset: Asset::USDC,
        amount: Amount::new(amount),
        fee_asset: Asset::ETH,
        fee: Amount::new(fee),
        urgent,
    }
}

#[test]
fn pools_reserve_post_void_and_guard_the_minimum() {
    let base = name("base");
    let mut pools = pools();
    pools.reserve(&reserve(1, 600, 30, false)).unwrap();
    assert_eq!(pools.available(base, Asset::USDC), Amount::new(400));
    assert_eq!(pools.available(base, Asset::ETH), Amount::new(70));
    let before = pools.clone();
    assert!(
        matches!(pools.can_reserve(&reserve(2, 201, 1, false)), Err(PoolError::BelowMin { .. })),
        "the engine may not decide what would leave 199 < min 200"
    );
    // The minimum is a rule for deciding; a journaled reservation is a fact the pools hold as
    // long as the money is there (replay must not re-judge it by a minimum raised since).
    assert!(pools.can_hold(&reserve(2, 201, 1, false)).is_ok());
    assert!(matches!(pools.reserve(&reserve(1, 1, 1, false)), Err(PoolError::AlreadyReserved(_))));
    assert!(pools.reserve(&reserve(3, 10, 71, true)).is_err(), "the fee pool cannot go negative either");
    assert_eq!(pools, before, "refused reservations change nothing");
    pools.reserve(&reserve(2, 390, 10, true)).unwrap();
    assert_eq!(pools.available(base, Asset::USDC), Amount::new(10), "urgent may use the reserve");
    assert!(pools.reserve(&reserve(4, 11, 1, true)).is_err(), "but never below zero");
    assert_eq!(pools.alerts()[0].kind, AlertKind::BelowMin);
    assert_eq!(pools.alerts()[0].to_target, Amount::new(990));
    pools.post(SettlementId(1), Amount::new(12)).unwrap();
    assert_eq!(pools.available(base, Asset::ETH), Amount::new(60 + 18), "unused fee reserve returns");
    pools.void(SettlementId(2)).unwrap();
    assert_eq!(pools.available(base, Asset::USDC), Amount::new(400));
    assert!(
        matches!(pools.post(SettlementId(2), Amount::ZERO), Err(PoolError::NoReservation(_))),
        "each reservation resolves once"
    );
    assert!(matches!(pools.void(SettlementId(1)), Err(PoolError::NoReservation(_))));
    pools.ledger().verify().unwrap();
    assert_eq!(pools.open_reservations(), 0);
}

/// A decision in words names the chosen rail with its score's parts, every other rail's
/// score, and why each rail that could not take the payment could not.
#[test]
fn a_decision_explains_itself_rail_by_rail() {
    let score =
        |total| Score { total, fee: total / 2, time: total / 2, failure: 0, preference: 0, misses_deadline: false };
    let rail = |name: &str| Name::new(name).unwrap();
    let decision = Decision {
        payment: PaymentId(1),
        chosen: Some(rail("base")),
        rails: vec![
            RailVerdict { rail: rail("base"), verdict: Verdict::Eligible(score(10)) },
            RailVerdict { rail: rail("optimism"), verdict: Verdict::Eligible(score(14)) },
            RailVerdict { rail: rail("ethereum"), verdict: Verdict::Ineligible(Ineligible::AssetUnsupported) },
        ],
    };
    assert_eq!(
        decision.explain(),
        "chose base: score 10 (fee 5, time 5, failures 0, preference 0); optimism: score 14 (fee 7, time 7, failures 0, preference 0); ethereum: does not carry the asset"
    );
    let none = Decision { chosen: None, ..decision };
    assert!(none.explain().starts_with("no rail can take it now; base: score 10"), "{}", none.explain());
}
