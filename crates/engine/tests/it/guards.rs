//! Mis-transfer guards on sandbox rails: each guard holds (or refuses) what it must, releases
//! what it may, and the bypass attempts fail: an operator's resolve, a merchant key, the same
//! treasury key approving twice, a guard changed after a payout passed intake.

use engine::guards::GuardActionError;
use model::guard::{AllowMode, AssetGuard};
use model::*;

use crate::*;

const M: MerchantId = MerchantId(7);

async fn engine_with_merchant(path: &std::path::Path, world: &World) -> Engine {
    let mut engine = super::open_engine(path, config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    engine.create_key([7; 32], Role::Merchant, Some(M), "shop", "admin", T0).await.unwrap();
    engine
}

fn draft(reference: &str, destination: &str, amount: u128) -> Draft {
    Draft {
        reference: reference.into(),
        amount: Amount::new(amount),
        asset: Asset::USDC,
        destination: destination.into(),
        networks: vec![Network::Evm(ChainId(8453))],
        class: name("standard"),
        deadline: None,
    }
}

fn accepted(intake: Intake) -> Vec<PaymentId> {
    match intake {
        Intake::Accepted { payments, .. } => payments,
        other => panic!("not accepted: {other:?}"),
    }
}

async fn rounds(engine: &mut Engine, world: &World, mut now: Timestamp, n: u64) -> Timestamp {
    for _ in 0..n {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        engine.check_staging().unwrap();
    }
    now
}

fn state_of(engine: &Engine, id: PaymentId) -> PaymentState {
    engine.payment(id).unwrap().expect("known payment").state
}

fn usdc_guard(test_above: Option<u128>, large_above: Option<u128>) -> AssetGuard {
    AssetGuard {
        asset: Asset::USDC,
        test_above: test_above.map(Amount::new),
        test_amount: Amount::new(1_000),
        large_above: large_above.map(Amount::new),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_refuses_or_holds_and_only_treasury_releases() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = engine_with_merchant(&dir.path().join("j.redb"), &world).await;
    let (listed, other) = (destination(1), destination(2));
    let policy = GuardPolicy { allow_mode: AllowMode::Only, allowlist: vec![listed.clone()], ..GuardPolicy::default() };
    engine.set_guards(M, Some(policy.clone()), "tr1", "vendors only", T0).await.unwrap();

    // Only: a row to another destination is refused at intake, naming it; nothing journaled.
    let tip = engine.journal().tip();
    let batch = [draft("a-1", &listed, 5_000), draft("a-2", &other, 5_000)];
    match engine.submit(M, "k1", &batch, T0).await {
        Err(IntakeError::Invalid(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!((errors[0].row, errors[0].field, errors[0].code), (1, "destination", "not_allowlisted"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(engine.journal().tip(), tip, "a refused batch changes nothing");

    // OrHold: accepted, held with the reason and who may release it.
    let policy = GuardPolicy { allow_mode: AllowMode::OrHold, ..policy };
    engine.set_guards(M, Some(policy), "tr1", "hold the rest", T0).await.unwrap();
    let ids = accepted(engine.submit(M, "k2", &batch, T0).await.unwrap());
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Held { in_flight: false });
    let reason = engine.payment(ids[1]).unwrap().unwrap().reason.unwrap();
    assert!(reason.contains("not on the allowlist") && reason.contains("treasury key"), "{reason}");

    // Bypass attempts: an operator's resolve, a merchant key, an operator key.
    let refused = engine.resolve(ids[1], Resolution::Retry, "op1", "looks fine", T0).await;
    assert!(matches!(refused, Err(OperatorError::Guarded(_))), "{refused:?}");
    for role in [Role::Merchant, Role::Operator] {
        let refused = engine.release_guard(ids[1], "k", role, "mine", T0).await;
        assert!(matches!(refused, Err(GuardActionError::Role(_))), "{refused:?}");
    }
    let now = rounds(&mut engine, &world, T0, 6).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Settled);
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Held { in_flight: false });
    assert_eq!(world.received(&other, Asset::USDC), 0);

    // Treasury releases it: it settles, and the release is journaled with who and why.
    engine.release_guard(ids[1], "tr2", Role::Treasury, "vendor confirmed by phone", now).await.unwrap();
    rounds(&mut engine, &world, now, 6).await;
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Settled);
    assert_eq!(world.received(&other, Asset::USDC), 5_000);
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    let released = records.iter().any(|r| {
        matches!(Event::decode(&r.payload).unwrap(), Event::PaymentResolved { payment, operator, reason, .. }
            if payment == ids[1] && operator == "tr2" && reason.contains("by phone"))
    });
    assert!(released, "the release is journaled with who and why");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_large_payout_to_a_new_destination_sends_a_test_first() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = engine_with_merchant(&dir.path().join("j.redb"), &world).await;
    let policy = GuardPolicy { assets: vec![usdc_guard(Some(100_000), None)], ..GuardPolicy::default() };
    engine.set_guards(M, Some(policy), "tr1", "test payouts", T0).await.unwrap();
    let to = destination(3);
    // Two rows to the same new destination share one test payout.
    let ids = accepted(
        engine.submit(M, "k1", &[draft("t-1", &to, 1_000_000), draft("t-2", &to, 500_000)], T0).await.unwrap(),
    );
    let first = engine.payment(ids[0]).unwrap().unwrap();
    let test = PaymentId(u128::from_str_radix(&first.payment.metadata["railyard.test_payout"], 16).unwrap());
    assert_eq!(first.payment.amount, Amount::new(999_000), "the rest of the payout");
    assert_eq!(engine.payment(test).unwrap().unwrap().payment.amount, Amount::new(1_000));
    assert_eq!(engine.state().guards.held[&ids[1]].test, Some(test), "the second row waits for the same test");

    // The test goes first; the rest waits until it is final, then goes by itself.
    let mut now = T0;
    let mut test_final_seen_alone = false;
    for _ in 0..20 {
        now = rounds(&mut engine, &world, now, 1).await;
        if state_of(&engine, test) == PaymentState::Settled && state_of(&engine, ids[0]) != PaymentState::Settled {
            test_final_seen_alone = true;
        }
        if state_of(&engine, test) != PaymentState::Settled {
            assert!(world.received(&to, Asset::USDC) <= 1_000, "nothing but the test before it is final");
        }
    }
    assert!(test_final_seen_alone);
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Settled);
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Settled);
    assert_eq!(world.received(&to, Asset::USDC), 1_500_000, "exactly what was accepted, test included");
    assert!(engine.state().guards.held.is_empty() && engine.state().guards.tests.is_empty());

    // The destination is known now: the next large payout to it needs no test.
    let again = accepted(engine.submit(M, "k2", &[draft("t-3", &to, 1_000_000)], now).await.unwrap());
    assert_eq!(state_of(&engine, again[0]), PaymentState::Queued);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_payout_waits_its_time_lock_and_two_distinct_approvals_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let world = World::new();
    let mut engine = engine_with_merchant(&path, &world).await;
    let policy = GuardPolicy {
        assets: vec![usdc_guard(None, Some(50_000))],
        large_delay_ms: 30_000,
        large_approvals: 2,
        ..GuardPolicy::default()
    };
    engine.set_guards(M, Some(policy), "tr1", "four eyes", T0).await.unwrap();
    let to = destination(4);
    let ids =
        accepted(engine.submit(M, "k1", &[draft("l-1", &to, 60_000), draft("l-2", &to, 50_000)], T0).await.unwrap());
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Held { in_flight: false });
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Queued, "at the threshold is not above it");

    // A release cannot skip the time lock; the same key cannot approve twice; merchants cannot approve.
    let refused = engine.release_guard(ids[0], "tr2", Role::Treasury, "hurry", T0).await;
    assert!(matches!(refused, Err(GuardActionError::Automatic { .. })), "{refused:?}");
    assert!(matches!(engine.approve(ids[0], "m", Role::Merchant, T0).await, Err(GuardActionError::Role(_))));
    engine.approve(ids[0], "tr2", Role::Treasury, T0).await.unwrap();
    let twice = engine.approve(ids[0], "tr2", Role::Treasury, T0).await;
    assert!(matches!(&twice, Err(GuardActionError::Invalid(m)) if m.contains("different treasury key")), "{twice:?}");

    // The guard's state survives a restart.
    drop(engine);
    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    assert_eq!(engine.state().guards.held[&ids[0]].approvals, vec!["tr2".to_owned()]);
    engine.approve(ids[0], "tr3", Role::Admin, T0).await.unwrap();
    // Approved twice, but the time lock holds it until T0 + 30 s.
    let now = rounds(&mut engine, &world, T0, 25).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Held { in_flight: false });
    assert_eq!(world.received(&to, Asset::USDC), 50_000);
    rounds(&mut engine, &world, now, 12).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Settled);
    assert_eq!(world.received(&to, Asset::USDC), 110_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_burn_addresses_and_precompiles_are_held() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = engine_with_merchant(&dir.path().join("j.redb"), &world).await;
    let policy = GuardPolicy { poisoning: true, ..GuardPolicy::default() };
    engine.set_guards(M, Some(policy), "tr1", "poisoning", T0).await.unwrap();
    let real = "0xabcd1111111111111111111111111111111189ef";
    let fake = "0xabcd2222222222222222222222222222222289ef";
    let paid = accepted(engine.submit(M, "k1", &[draft("p-1", real, 7_000)], T0).await.unwrap());
    let now = rounds(&mut engine, &world, T0, 6).await;
    assert_eq!(state_of(&engine, paid[0]), PaymentState::Settled);

    let batch = [
        draft("p-2", fake, 7_000),
        draft("p-3", real, 7_000),
        draft("p-4", "0x000000000000000000000000000000000000dEaD", 1),
        draft("p-5", "0x0000000000000000000000000000000000000004", 1),
    ];
    let ids = accepted(engine.submit(M, "k2", &batch, now).await.unwrap());
    let reason = |id| engine.payment(id).unwrap().unwrap().reason.unwrap_or_default();
    assert!(reason(ids[0]).contains("looks like 0xabcd1111111111111111111111111111111189ef"), "{}", reason(ids[0]));
    assert_eq!(state_of(&engine, ids[1]), PaymentState::Queued, "the real one again passes");
    assert!(reason(ids[2]).contains("burn address"), "{}", reason(ids[2]));
    assert!(reason(ids[3]).contains("precompile"), "{}", reason(ids[3]));
    // Treasury rejects the look-alike: it fails, and the merchant is told.
    engine.reject_guard(ids[0], "tr1", Role::Treasury, "poisoning attempt", now).await.unwrap();
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Failed);
    rounds(&mut engine, &world, now, 6).await;
    assert_eq!(world.received(fake, Asset::USDC), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_set_after_intake_still_stops_the_payout_before_signing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = engine_with_merchant(&dir.path().join("j.redb"), &world).await;
    let to = destination(5);
    let ids = accepted(engine.submit(M, "k1", &[draft("r-1", &to, 9_000)], T0).await.unwrap());
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Queued, "no guard at intake");
    // The guard changes while the payout waits in the queue.
    let policy = GuardPolicy { allow_mode: AllowMode::Only, allowlist: vec![destination(6)], ..GuardPolicy::default() };
    engine.set_guards(M, Some(policy), "tr1", "lock down", T0).await.unwrap();
    let now = rounds(&mut engine, &world, T0, 6).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Held { in_flight: false });
    let reason = engine.payment(ids[0]).unwrap().unwrap().reason.unwrap();
    assert!(reason.contains("not on the allowlist"), "{reason}");
    assert_eq!(world.received(&to, Asset::USDC), 0);
    assert!(engine.state().book.settlements.is_empty(), "nothing was planned for it");
    // Released by treasury, the same guard does not stop it again.
    engine.release_guard(ids[0], "tr1", Role::Treasury, "one-off, approved", now).await.unwrap();
    rounds(&mut engine, &world, now, 6).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Settled);
    // A bad policy is refused naming its field; a merchant without keys is unknown.
    let bad = GuardPolicy { large_approvals: 3, ..GuardPolicy::default() };
    let refused = engine.set_guards(M, Some(bad), "tr1", "x", now).await;
    assert!(matches!(&refused, Err(GuardActionError::Invalid(m)) if m.starts_with("large_approvals")), "{refused:?}");
    let refused = engine.set_guards(MerchantId(99), None, "tr1", "x", now).await;
    assert!(matches!(refused, Err(GuardActionError::UnknownMerchant(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_of_part_of_a_hold_is_not_undone_before_signing() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = engine_with_merchant(&dir.path().join("j.redb"), &world).await;
    let policy = GuardPolicy {
        allow_mode: AllowMode::OrHold,
        allowlist: vec![destination(8)],
        assets: vec![usdc_guard(None, Some(10_000))],
        large_delay_ms: 5_000,
        ..GuardPolicy::default()
    };
    engine.set_guards(M, Some(policy), "tr1", "both", T0).await.unwrap();
    let to = destination(9);
    let ids = accepted(engine.submit(M, "k1", &[draft("x-1", &to, 20_000)], T0).await.unwrap());
    assert_eq!(engine.state().guards.held[&ids[0]].reasons.len(), 2, "not allowlisted and large");
    // Treasury releases the allowlist part; the time lock still holds it, then lets it go, and
    // the guard before signing does not hold it again for the reason released.
    engine.release_guard(ids[0], "tr1", Role::Treasury, "known vendor", T0).await.unwrap();
    assert_eq!(engine.state().guards.held[&ids[0]].reasons[0].0, GuardKind::Large);
    let now = rounds(&mut engine, &world, T0, 3).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Held { in_flight: false });
    rounds(&mut engine, &world, now, 10).await;
    assert_eq!(state_of(&engine, ids[0]), PaymentState::Settled);
    assert_eq!(world.received(&to, Asset::USDC), 20_000);
}
