//! Named scenarios from the simulator's findings (issue 10's list): each failed on the code
//! before its fix.

use engine::*;
use model::*;
use rails::sandbox::Fault;

use super::{BLOCK_MS, T0, World, config, drafts, fund, run_until_done};

fn states(engine: &Engine, payments: &[PaymentId]) -> Vec<PaymentState> {
    payments.iter().map(|p| engine.payment(*p).unwrap().unwrap().state).collect()
}

/// `count` urgent USDC payments from `start` that only base carries: they go out at once.
fn urgent_on_base(start: u64, count: u64) -> Vec<Draft> {
    let mut batch = drafts(start, count);
    for draft in &mut batch {
        (draft.asset, draft.class, draft.networks) = (Asset::USDC, super::name("urgent"), vec![Network::BASE]);
    }
    batch
}

/// Submits `urgent_on_base(1, count)` as merchant 1's batch "k" at `T0`.
async fn submit_urgent_on_base(engine: &mut Engine, count: u64) -> Vec<PaymentId> {
    let batch = urgent_on_base(1, count);
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
        panic!("accepted")
    };
    payments
}

/// Scenario 2: a held settlement of three payments whose operator resumes one of them is
/// resumed whole, and when it is held again the engine holds it again (it stopped before:
/// the other two were still held, and holding a held payment is not a transition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_a_settlement_resumed_by_one_leg_and_held_again() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.rebroadcasts_max = 0; // a single drop holds the settlement for the operator
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let batch = urgent_on_base(1, 3);
    let payments = submit_urgent_on_base(&mut engine, 3).await;
    let mut now = T0;
    let mut tick = async |engine: &mut Engine, ticks: u32| {
        for _ in 0..ticks {
            now = now.saturating_add_ms(BLOCK_MS);
            world.advance(now);
            engine.tick(now).await.unwrap();
        }
        now
    };
    world.sandboxes[0].inject(Fault::DropNext);
    let now1 = tick(&mut engine, 4).await;
    let held = PaymentState::Held { in_flight: true };
    assert_eq!(states(&engine, &payments), vec![held; 3], "one settlement, held whole");

    world.sandboxes[0].inject(Fault::DropNext);
    engine.resolve(payments[1], Resolution::Resume, "op", "the node lost it", now1).await.unwrap();
    assert_eq!(states(&engine, &payments), vec![PaymentState::Broadcast; 3], "resuming one leg resumes them all");
    tick(&mut engine, 4).await;
    assert!(engine.stopped().is_none(), "{:?}", engine.stopped());
    assert_eq!(states(&engine, &payments), vec![held; 3], "held again, whole");

    let now2 = tick(&mut engine, 0).await;
    engine.resolve(payments[0], Resolution::Resume, "op", "again", now2).await.unwrap();
    run_until_done(&mut engine, &world, now2, 50).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 3]);
    for (i, draft) in batch.iter().enumerate() {
        let paid = world.sandboxes[0]
            .balance_of(&Address::parse(&draft.destination, Network::BASE).unwrap().to_string(), Asset::USDC);
        assert_eq!(paid, draft.amount, "payment {i} paid exactly once");
    }
}

/// Scenario 5: a payment above every rail's amount limit is refused at intake, naming the
/// limits, and the batch with it changes nothing (it stayed Queued for ever before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_5_an_amount_no_rail_carries_is_refused_at_intake() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    let tip = engine.journal().tip();
    let mut batch = drafts(0, 3);
    batch[2].amount = Amount::new(10u128.pow(25));
    let Err(IntakeError::Invalid(rows)) = engine.submit(MerchantId(1), "k", &batch, T0).await else {
        panic!("refused")
    };
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].row, rows[0].field, rows[0].code), (2, "amount", "amount_out_of_rail_limits"));
    assert!(rows[0].message.contains("base takes 0.000001 to "), "{}", rows[0].message);
    assert_eq!(engine.journal().tip(), tip, "nothing journaled");
}

/// Scenario 11: a rail whose finality is zero confirmations is refused when the engine opens
/// (it would call a settlement final before any block held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_11_zero_confirmations_to_final_is_refused() {
    use rails::sandbox::{SandboxConfig, SandboxRail};
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut rails = world.rails();
    let mut capabilities = rails[0].capabilities().clone();
    capabilities.confirmations_final = 0;
    let config_of = SandboxConfig {
        capabilities,
        seed: 9,
        block_time_ms: BLOCK_MS,
        fee: Amount::new(1_000),
        fee_per_payout: Amount::ZERO,
        fee_cap: Amount::new(100_000),
    };
    rails[0] = std::sync::Arc::new(SandboxRail::new(config_of, T0));
    let refused = super::open_engine(&dir.path().join("journal.redb"), config(), rails, T0).await;
    let Err(EngineError::Config(message)) = refused else { panic!("refused") };
    assert!(message.contains("rail base: confirmations_final must be at least 1"), "{message}");
}

/// Scenario 6: the treasury raises a pool's minimum while a settlement holds a reservation
/// that the new minimum would not allow. The engine starts again (replay takes journaled
/// reservations as facts, it does not re-judge them by today's minimums), today's minimum
/// applies to new decisions, also when the state comes from a snapshot, and the settlement
/// in flight settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_6_a_minimum_raised_between_restarts() {
    // From a snapshot (one after every commit), and by replaying the whole journal.
    for snapshots in [1, 0] {
        minimum_raised_between_restarts(snapshots).await;
    }
}

async fn minimum_raised_between_restarts(snapshot_every_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut cfg = config();
    cfg.snapshot_every_bytes = snapshot_every_bytes;
    let mut engine = super::open_engine(&path, cfg.clone(), world.rails(), T0).await.unwrap();
    let base = super::name("base");
    engine.fund_pool(base, Asset::USDC, Amount::new(10_000), 1, T0).await.unwrap();
    engine.fund_pool(base, Asset::ETH, Amount::new(10u128.pow(12)), 2, T0).await.unwrap();
    let mut batch = drafts(1, 3);
    for draft in &mut batch {
        (draft.asset, draft.amount, draft.networks) = (Asset::USDC, Amount::new(3_000), vec![Network::BASE]);
        draft.class = super::name("urgent");
    }
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
        panic!("accepted")
    };
    let now = T0.saturating_add_ms(BLOCK_MS);
    world.advance(now);
    engine.tick(now).await.unwrap();
    assert_eq!(engine.state().pools.available(base, Asset::USDC), Amount::new(1_000), "9,000 reserved");
    drop(engine);

    let pool = cfg.state.pools.iter_mut().find(|p| p.rail == base && p.asset == Asset::USDC).unwrap();
    pool.min = Amount::new(5_000);
    let mut engine = super::open_engine(&path, cfg, world.rails(), now).await.expect("starts under the new minimum");
    assert_eq!(engine.journal().latest_snapshot().unwrap().is_some(), snapshot_every_bytes > 0);
    assert_eq!(engine.state().pools.spendable(base, Asset::USDC, false), Amount::ZERO, "today's minimum applies");
    run_until_done(&mut engine, &world, now, 50).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 3]);
}

/// Scenario 3: the node refuses a settlement's broadcast for good (the hot wallet cannot pay
/// for gas). The settlement does not stay Signed for ever: it is held with the node's answer
/// once the node has said no more than `rebroadcasts_max` times (its nonce blocks every later
/// transaction of the rail, so an operator must act). When the wallet is funded, resuming
/// sends the same bytes again and everything settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_a_broadcast_refused_for_good_is_held_then_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.rebroadcasts_max = 2;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    world.sandboxes[0].inject(Fault::RefuseBroadcasts);
    let batch = urgent_on_base(1, 4);
    let payments = submit_urgent_on_base(&mut engine, 4).await;
    let mut now = T0;
    for _ in 0..60 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    assert!(engine.stopped().is_none());
    let held = PaymentState::Held { in_flight: true };
    assert_eq!(states(&engine, &payments), vec![held; 4], "held, not Signed for ever");

    world.sandboxes[0].inject(Fault::Restore);
    engine.resolve(payments[0], Resolution::Resume, "op", "hot wallet funded", now).await.unwrap();
    run_until_done(&mut engine, &world, now, 60).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 4]);
    for draft in &batch {
        let address = Address::parse(&draft.destination, Network::BASE).unwrap().to_string();
        assert_eq!(world.sandboxes[0].balance_of(&address, Asset::USDC), draft.amount, "paid once");
    }
}

/// A settlement waiting behind a nonce the node refused is not bumped for ever: its bumps
/// (each an eighth dearer) reach the fee cap and it is held with that reason. Once the
/// refused one is resumed, both are mined in nonce order and everything settles once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_behind_a_refused_nonce_is_held_not_bumped_for_ever() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.rebroadcasts_max = 1;
    cfg.anomaly.stuck_after_ms = 3_000;
    cfg.anomaly.bump_budget = 50;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let base_only = |start: u64| urgent_on_base(start, 2);
    world.sandboxes[0].inject(Fault::RefuseBroadcasts);
    let Intake::Accepted { payments: first, .. } = engine.submit(MerchantId(1), "a", &base_only(1), T0).await.unwrap()
    else {
        panic!("accepted")
    };
    let mut now = T0;
    let mut tick = async |engine: &mut Engine, ticks: u32| {
        for _ in 0..ticks {
            now = now.saturating_add_ms(BLOCK_MS);
            world.advance(now);
            engine.tick(now).await.unwrap();
        }
        now
    };
    tick(&mut engine, 6).await;
    let held = PaymentState::Held { in_flight: true };
    assert_eq!(states(&engine, &first), vec![held; 2], "the refused settlement is held");
    world.sandboxes[0].inject(Fault::Restore);
    let at = tick(&mut engine, 0).await;
    let Intake::Accepted { payments: second, .. } = engine.submit(MerchantId(1), "b", &base_only(3), at).await.unwrap()
    else {
        panic!("accepted")
    };
    let at = tick(&mut engine, 200).await;
    assert!(engine.stopped().is_none());
    assert_eq!(states(&engine, &second), vec![held; 2], "held behind the refused nonce, not bumped for ever");

    engine.resolve(first[0], Resolution::Resume, "op", "hot wallet funded", at).await.unwrap();
    engine.resolve(second[0], Resolution::Resume, "op", "its nonce is free now", at).await.unwrap();
    run_until_done(&mut engine, &world, at, 60).await;
    assert_eq!(states(&engine, &first), vec![PaymentState::Settled; 2]);
    assert_eq!(states(&engine, &second), vec![PaymentState::Settled; 2]);
}

/// Scenario 1: while the engine is down, a reorg takes a confirmed settlement out of its block
/// and a fee spike keeps it out. After the restart the chain says pending while the book says
/// confirmed; the engine must see the reorg (it tried to bump a settlement the book held as
/// confirmed, the book refused, and the engine stopped on every restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_a_reorg_while_the_engine_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.stuck_after_ms = 5_000;
    let mut engine = super::open_engine(&path, cfg.clone(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let batch = urgent_on_base(1, 2);
    let payments = submit_urgent_on_base(&mut engine, 2).await;
    let mut now = T0;
    for _ in 0..10 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        if states(&engine, &payments) == vec![PaymentState::Confirmed; 2] {
            break;
        }
    }
    assert_eq!(states(&engine, &payments), vec![PaymentState::Confirmed; 2], "confirmed, not yet final");
    drop(engine);

    world.sandboxes[0].inject(Fault::Reorg { depth: 1 });
    world.sandboxes[0].inject(Fault::FeeSpike { multiplier: 3 });
    now = now.saturating_add_ms(10 * BLOCK_MS);
    world.advance(now);
    let mut engine = super::open_engine(&path, cfg, world.rails(), now).await.unwrap();
    for _ in 0..30 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap_or_else(|e| panic!("the engine stopped: {e}"));
    }
    world.sandboxes[0].inject(Fault::Restore);
    run_until_done(&mut engine, &world, now, 100).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 2]);
    for draft in &batch {
        let address = Address::parse(&draft.destination, Network::BASE).unwrap().to_string();
        assert_eq!(world.sandboxes[0].balance_of(&address, Asset::USDC), draft.amount, "paid once");
    }
}

/// Scenario 8 (its fee half): a reverted settlement is dead, its payments reissued and paid
/// once, and the fee the chain charged for the reverted transaction is booked: when nothing is
/// open, the fees the ledger booked equal what the chain charged (they were voided before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_8_the_fee_of_a_reverted_settlement_is_booked() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    world.sandboxes[0].inject(Fault::RevertNext);
    let payments = submit_urgent_on_base(&mut engine, 3).await;
    run_until_done(&mut engine, &world, T0, 60).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 3]);
    assert!(payments.iter().all(|p| engine.payment(*p).unwrap().unwrap().attempt == 2), "reissued once");
    let base = super::name("base");
    let booked = engine.state().pools.ledger().account_of(ledger::Owner::Fees(base), Asset::ETH).unwrap();
    let paid = world.sandboxes[0].fees_paid();
    assert_eq!(booked.balance.credits_posted, paid, "two transactions mined, two fees booked");
    assert!(paid > Amount::new(1_000));
}

/// Scenario 8 (its attempts half): a batch that reverts every time is not reissued without
/// limit: after `attempts_max` attempts it is held with why, nothing was paid, and each
/// reverted attempt's fee is booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_8_a_batch_that_always_reverts_is_held_after_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.anomaly.attempts_max = 2;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let batch = urgent_on_base(1, 2);
    let payments = submit_urgent_on_base(&mut engine, 2).await;
    let mut now = T0;
    for _ in 0..40 {
        world.sandboxes[0].inject(Fault::RevertNext);
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    assert_eq!(states(&engine, &payments), vec![PaymentState::Held { in_flight: false }; 2]);
    let record = engine.payment(payments[0]).unwrap().unwrap();
    assert_eq!(record.attempt, 2, "two attempts, no third");
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    let reason = records.iter().rev().find_map(|r| match Event::decode(&r.payload).unwrap() {
        Event::PaymentHeld { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(reason.unwrap().starts_with("attempt 2 of 2 died too (it reverted)"));
    for draft in &batch {
        let address = Address::parse(&draft.destination, Network::BASE).unwrap().to_string();
        assert_eq!(world.sandboxes[0].balance_of(&address, Asset::USDC), Amount::ZERO, "nobody paid");
    }
    let base = super::name("base");
    let booked = engine.state().pools.ledger().account_of(ledger::Owner::Fees(base), Asset::ETH).unwrap();
    assert_eq!(booked.balance.credits_posted, world.sandboxes[0].fees_paid(), "both burnt fees booked");
}

/// Scenario 6 (its rail half): the treasury removes a rail from the configuration while one of
/// its settlements is in flight and payments wait for it. The engine starts; the waiting
/// payments go to the rails that remain; the settlement it can no longer watch is held with
/// the reason (it may still confirm, so nothing of it is reissued), and its pools' funds stay
/// booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_6_a_rail_removed_between_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    super::fund(&mut engine, T0).await;
    let base = super::name("base");
    // Three urgent payments that only base carries go out at once; three standard ones that
    // any rail carries wait for company.
    let mut batch = drafts(1, 6);
    for (i, draft) in batch.iter_mut().enumerate() {
        if i < 3 {
            (draft.networks, draft.class) = (vec![Network::BASE], super::name("urgent"));
        } else {
            draft.class = super::name("bulk");
        }
    }
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
        panic!("accepted")
    };
    let now = T0.saturating_add_ms(BLOCK_MS);
    world.advance(now);
    engine.tick(now).await.unwrap();
    let before = states(&engine, &payments);
    assert!(before[..3].iter().all(|s| s.is_in_flight()), "{before:?}");
    drop(engine);

    let mut cfg = config();
    cfg.state.pools.retain(|p| p.rail != base);
    cfg.state.fee_assets.remove(&base);
    let rails: Vec<_> = world.rails().into_iter().filter(|r| r.capabilities().rail != base).collect();
    let mut engine = super::open_engine(&path, cfg, rails, now).await.expect("starts without the rail");
    let now = run_until_done(&mut engine, &world, now, 30).await;
    // What was in flight on base (the urgent three, and any that went with them) is held;
    // what was waiting settles on the rails that remain.
    for (payment, (before, after)) in payments.iter().zip(before.iter().zip(states(&engine, &payments))) {
        if before.is_in_flight() {
            assert_eq!(after, PaymentState::Held { in_flight: true });
            let reason = super::held_reason(&engine, *payment).unwrap();
            assert!(reason.contains("rail base is not configured"), "{reason}");
        } else {
            assert_eq!(after, PaymentState::Settled);
        }
    }
    assert!(before.iter().any(|s| !s.is_in_flight()), "some payments were waiting: {before:?}");
    let refused = engine.fund_pool(base, Asset::USDC, Amount::new(1), 99, now).await;
    assert!(matches!(refused, Err(EngineError::Refused(_))), "{refused:?}");
    engine.tick(now.saturating_add_ms(BLOCK_MS)).await.expect("the engine keeps running");
}

/// Scenario 10: the fee booked is the fee the chain charged, read from what the rail observed
/// (an EVM receipt's gas used times its effective price), not the fee the version offered. A
/// settlement stuck in a block-less stretch is bumped (it offers an eighth more); when blocks
/// include again it is charged the block's price, and the ledger books exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_10_the_fee_booked_is_the_fee_paid() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    world.sandboxes[0].inject(Fault::Stuck);
    let payments = submit_urgent_on_base(&mut engine, 2).await;
    // Stuck past `stuck_after_ms`: bumped.
    let mut now = T0;
    for _ in 0..25 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    let settlement = engine.payment(payments[0]).unwrap().unwrap().settlement.unwrap();
    let offered = engine.settlement(settlement).unwrap().unwrap().txs.last().unwrap().fee;
    assert!(offered > Amount::new(1_000), "bumped above the block price: {offered}");
    world.sandboxes[0].inject(Fault::Restore);
    run_until_done(&mut engine, &world, now, 30).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 2]);
    let base = super::name("base");
    let booked = engine.state().pools.ledger().account_of(ledger::Owner::Fees(base), Asset::ETH).unwrap();
    assert_eq!(world.sandboxes[0].fees_paid(), Amount::new(1_000), "charged the block's price");
    assert_eq!(booked.balance.credits_posted, Amount::new(1_000), "booked what was charged, not {offered}");
}

/// Scenario 12: while the engine is down, a transaction railyard did not sign spends the
/// nonce of a settlement in flight, and by the time the engine looks again the spend is older
/// than the state its node keeps, so the node cannot name the spender. The settlement is
/// neither reissued (its payments may have been paid by that transaction) nor watched for
/// ever without a reason: its payments are held, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_12_a_spender_the_node_cannot_name_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    world.sandboxes[0].keep_state(3);
    world.sandboxes[0].inject(Fault::Stuck);
    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let payments = submit_urgent_on_base(&mut engine, 2).await;
    let now = T0.saturating_add_ms(BLOCK_MS);
    world.advance(now);
    engine.tick(now).await.unwrap();
    assert_eq!(states(&engine, &payments), vec![PaymentState::Broadcast; 2]);
    drop(engine);

    world.sandboxes[0].inject(Fault::Restore);
    world.sandboxes[0].inject(Fault::ForeignSpend);
    let now = now.saturating_add_ms(10 * BLOCK_MS);
    world.advance(now);
    let mut engine = super::open_engine(&path, config(), world.rails(), now).await.unwrap();
    let now = run_until_done(&mut engine, &world, now, 10).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Held { in_flight: true }; 2]);
    let reason = super::held_reason(&engine, payments[0]).unwrap();
    assert!(reason.contains("cannot say by which transaction"), "{reason}");
    assert!(reason.contains("more than 3 blocks ago"), "{reason}");
    assert_eq!(engine.payment(payments[0]).unwrap().unwrap().attempt, 1, "not reissued");
    // Held once, not again on every round.
    let holds_before = engine.journal().read_range(1, 1_000_000).unwrap().len();
    run_until_done(&mut engine, &world, now, 5).await;
    let holds_after = engine.journal().read_range(1, 1_000_000).unwrap().len();
    assert_eq!(holds_before, holds_after, "nothing more to journal while held");
}

/// Scenario 7: a final settlement is taken off its chain by a reorg deeper than finality, and
/// its node forgot the transaction (a pruned node drops what it no longer holds the body of).
/// Reconciliation does not only report it: the payments are held with the reason and their
/// merchants told, the lost finality survives a restart, the same bytes are sent again (the
/// same nonce: it can pay at most once), and once the chain has the settlement at final depth
/// again the payments are settled again and told so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_7_a_final_settlement_reorged_past_finality_is_sent_again_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    world.sandboxes[0].prune(1);
    let mut engine = super::open_engine(&path, config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let payments = submit_urgent_on_base(&mut engine, 3).await;
    let now = run_until_done(&mut engine, &world, T0, 30).await;
    assert_eq!(states(&engine, &payments), vec![PaymentState::Settled; 3]);
    let settlement = engine.payment(payments[0]).unwrap().unwrap().settlement.unwrap();
    let delivered: Vec<u128> = engine.state().outbox.keys().copied().collect();
    engine.acknowledge(&delivered, now).await.unwrap();

    world.sandboxes[0].inject(Fault::Reorg { depth: 50 });
    let report = engine.reconcile(now).await.unwrap();
    assert!(
        report
            .differences
            .iter()
            .any(|d| matches!(d, Difference::FinalNotOnChain { settlement: s, .. } if *s == settlement)),
        "{report:?}"
    );
    assert!(engine.finality_lost().contains_key(&settlement));
    let mut told: Vec<(PaymentId, PaymentState)> =
        engine.state().outbox.values().map(|n| (n.payment, n.state)).collect();
    told.sort_by_key(|(p, _)| *p);
    let mut held: Vec<(PaymentId, PaymentState)> =
        payments.iter().map(|p| (*p, PaymentState::Held { in_flight: true })).collect();
    held.sort_by_key(|(p, _)| *p);
    assert_eq!(told, held, "each merchant is told its payment is held");

    // Lost finality is journaled state: a restart keeps it, and the next run sends it again.
    drop(engine);
    let mut engine = super::open_engine(&path, config(), world.rails(), now).await.unwrap();
    assert!(engine.finality_lost().contains_key(&settlement), "survives a restart");
    let now = run_until_done(&mut engine, &world, now, 5).await;
    engine.reconcile(now).await.unwrap();
    let now = run_until_done(&mut engine, &world, now, 5).await;
    let report = engine.reconcile(now).await.unwrap();
    assert!(report.clean.contains(&settlement), "mined again and final: {report:?}");
    assert!(engine.finality_lost().is_empty());
    let settled_again =
        engine.state().outbox.values().filter(|n| n.state == PaymentState::Settled && payments.contains(&n.payment));
    assert_eq!(settled_again.count(), 3, "the merchants are told it is settled again");
    let records = engine.journal().read_range(1, 1_000_000).unwrap();
    let count = |lost: bool| {
        records
            .iter()
            .filter(|r| match Event::decode(&r.payload).unwrap() {
                Event::FinalityLost { .. } => lost,
                Event::FinalityRestored { .. } => !lost,
                _ => false,
            })
            .count()
    };
    assert_eq!((count(true), count(false)), (1, 1), "lost once, restored once");
}
