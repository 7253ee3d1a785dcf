//! Named scenarios from the simulator's findings (issue 10's list): each failed on the code
//! before its fix.

use engine::*;
use model::*;
use rails::sandbox::Fault;

use super::{BLOCK_MS, T0, World, config, drafts, fund, run_until_done};

fn states(engine: &Engine, payments: &[PaymentId]) -> Vec<PaymentState> {
    payments.iter().map(|p| engine.payment(*p).unwrap().unwrap().state).collect()
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
    let mut engine = Engine::open(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let mut batch = drafts(1, 3);
    for draft in &mut batch {
        draft.asset = Asset::USDC;
        draft.class = super::name("urgent");
        draft.networks = vec![Network::BASE];
    }
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
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
    let mut engine = Engine::open(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    let tip = engine.journal().tip();
    let mut batch = drafts(0, 3);
    batch[2].amount = Amount::new(10u128.pow(25));
    let Err(IntakeError::Invalid(rows)) = engine.submit(MerchantId(1), "k", &batch, T0).await else {
        panic!("refused")
    };
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].row, rows[0].field, rows[0].code), (2, "amount", "amount_out_of_rail_limits"));
    assert!(rows[0].message.contains("base takes 1 to "), "{}", rows[0].message);
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
        fee_cap: Amount::new(100_000),
    };
    rails[0] = std::sync::Arc::new(SandboxRail::new(config_of, T0));
    let refused = Engine::open(&dir.path().join("journal.redb"), config(), rails, T0).await;
    let Err(EngineError::Config(message)) = refused else { panic!("refused") };
    assert!(message.contains("rail base: confirmations_final must be at least 1"), "{message}");
}
