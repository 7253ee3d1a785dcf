//! Liquidity: the router sees what a reservation will need (the pool's minimum, a settlement's
//! fee in the fee asset), a pool that can carry part of a batch settles that part, and a
//! payment no rail can take is held with every rail's reason instead of waiting for ever.
//! (Each of these kept payments Queued for ever in the simulator.)

use engine::*;
use model::*;

use super::{BLOCK_MS, T0, World, config, drafts, held_reason, name};

fn usdc_only_on(rails: &[&str], count: u64, start: u64) -> Vec<Draft> {
    let mut batch = drafts(start, count);
    for draft in &mut batch {
        draft.asset = Asset::USDC;
        draft.amount = Amount::new(1_000);
        draft.class = name("standard");
        draft.networks = rails
            .iter()
            .map(|r| match *r {
                "base" => Network::BASE,
                "optimism" => Network::Evm(ChainId(10)),
                _ => Network::Evm(ChainId(42161)),
            })
            .collect();
    }
    batch
}

/// Base's USDC pool holds 4,500 for six payments of 1,000 that arrive over two rounds (each
/// round alone fits): four settle, the other two are held once no rail could take them for
/// `unroutable_hold_ms`, with the pool's shortfall as the reason and a notice each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pool_settles_what_it_can_and_the_rest_is_held_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.unroutable_hold_ms = 5_000;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    engine.fund_pool(name("base"), Asset::USDC, Amount::new(4_500), 1, T0).await.unwrap();
    engine.fund_pool(name("base"), Asset::ETH, Amount::new(10u128.pow(12)), 2, T0).await.unwrap();
    let mut ids = Vec::new();
    let mut now = T0;
    for round in 0..2 {
        let batch = usdc_only_on(&["base"], 3, round * 3);
        let Intake::Accepted { payments, .. } =
            engine.submit(MerchantId(1), &format!("k{round}"), &batch, now).await.unwrap()
        else {
            panic!("accepted")
        };
        ids.extend(payments);
        now = now.saturating_add_ms(BLOCK_MS / 2);
        world.advance(now);
        engine.tick(now).await.unwrap();
    }
    for _ in 0..30 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        engine.tick(now).await.unwrap();
        engine.check_staging().unwrap();
    }
    let state = |id: &PaymentId| engine.payment(*id).unwrap().unwrap().state;
    let settled = ids.iter().filter(|id| state(id) == PaymentState::Settled).count();
    let held: Vec<PaymentId> =
        ids.iter().copied().filter(|id| state(id) == PaymentState::Held { in_flight: false }).collect();
    assert_eq!((settled, held.len()), (4, 2), "{:?}", engine.count_by_state());
    let reason = held_reason(&engine, held[0]).expect("held with a reason");
    assert!(reason.contains("base: its USDC pool is short (500 available, 1000 needed)"), "{reason}");
    assert!(engine.state().outbox.values().filter(|n| held.contains(&n.payment)).count() == 2, "each hold is told");
}

/// Optimism has USDC but no ETH to pay its fees; arbitrum has both. Every payment goes by
/// arbitrum, and none waits on optimism's refused reservations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rail_without_its_fee_asset_is_not_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.unroutable_hold_ms = 5_000;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    engine.fund_pool(name("optimism"), Asset::USDC, Amount::new(10u128.pow(12)), 1, T0).await.unwrap();
    engine.fund_pool(name("arbitrum"), Asset::USDC, Amount::new(10u128.pow(12)), 2, T0).await.unwrap();
    engine.fund_pool(name("arbitrum"), Asset::ETH, Amount::new(10u128.pow(12)), 3, T0).await.unwrap();
    // Optimism comes before arbitrum in the rail list and would win a tie.
    let batch = usdc_only_on(&["optimism", "arbitrum"], 40, 0);
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "k", &batch, T0).await.unwrap() else {
        panic!("accepted")
    };
    let now = super::run_until_done(&mut engine, &world, T0, 60).await;
    assert!(now.saturating_since(T0) < 30_000, "settled without waiting out a hold");
    for id in payments {
        let record = engine.payment(id).unwrap().unwrap();
        assert_eq!(record.state, PaymentState::Settled);
        let settlement = engine.settlement(record.settlement.unwrap()).unwrap().unwrap();
        assert_eq!(settlement.settlement.rail, name("arbitrum"));
    }
}
