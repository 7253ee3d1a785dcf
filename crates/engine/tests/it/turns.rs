//! Intake on any node (issue 14): a standby journals a merchant's batch itself, in its turn on
//! the shared journal, with no lease; the leader, taking its own turn, first applies what the
//! standby appended, then routes and settles it. Turns keep the nodes' appends in one chain,
//! each decided from the state at the tip it continues.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use engine::*;
use journal::Journal;
use journal_pg::cluster::Cluster;
use journal_pg::{LeaseKeeper, PgStore};
use model::{Amount, Asset, MerchantId};

use super::follower::tick_in_turn;
use super::{BLOCK_MS, T0, World, check_paid_exactly_once, config, drafts, fund, name};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_admits_batches_in_its_turn_and_the_leader_settles_each_payment_once() {
    let cluster = Cluster::start();
    let url = journal_pg::database(&cluster.url, "turns").unwrap();
    let ttl = Duration::from_millis(1_500);
    let world = World::new();
    let keeper = Arc::new(LeaseKeeper::start(&url, "node-a", vec!["engine".into()], ttl).unwrap());
    assert!(keeper.first_round(ttl));
    let store = PgStore::connect_fenced(&url, Arc::clone(&keeper), "engine").unwrap();
    let journal = Journal::with_store(Arc::new(store), config().journal).unwrap();
    let fence = Arc::clone(&keeper);
    let guard = Box::new(move || fence.fence("engine").is_some()) as LeaseGuard;
    let mut leader = Engine::open_acting(journal, config(), world.rails(), T0, None, guard).await.unwrap();
    let node = PgStore::connect_node(&url, 1, ttl).unwrap();
    let journal = Journal::with_store(Arc::new(node), config().journal).unwrap();
    let mut standby = Engine::open_standby(journal, config(), world.rails(), T0).unwrap();

    // Outside its turn a shared engine acts on nothing; a standby takes no command but a batch.
    let refused = leader.fund_pool(name("base"), Asset::ETH, Amount::new(1), 1, T0).await;
    assert!(matches!(refused, Err(EngineError::Journal(_))), "{refused:?}");
    let refused = standby.submit(MerchantId(1), "early", &drafts(0, 10), T0).await;
    assert!(matches!(refused, Err(IntakeError::Engine(EngineError::Standby))), "{refused:?}");
    standby.begin_turn().await.unwrap();
    let refused = standby.fund_pool(name("base"), Asset::ETH, Amount::new(1), 1, T0).await;
    assert!(matches!(refused, Err(EngineError::Standby)), "{refused:?}");
    standby.end_turn().await.unwrap();
    assert_eq!(leader.journal().stored_tip().unwrap(), 0, "nothing was journaled");

    leader.begin_turn().await.unwrap();
    fund(&mut leader, T0).await;
    leader.end_turn().await.unwrap();

    // Batches through both nodes in turn, between the leader's rounds.
    let total = 3_000;
    let mut now = T0;
    let mut ids = BTreeSet::new();
    let mut first = Vec::new();
    for (i, start) in (0..total).step_by(500).enumerate() {
        let node = if i % 2 == 0 { &mut standby } else { &mut leader };
        node.begin_turn().await.unwrap();
        let key = format!("batch-{start}");
        let intake = node.submit(MerchantId(start / 500 % 3 + 1), &key, &drafts(start, 500), now).await;
        node.end_turn().await.unwrap();
        let Ok(Intake::Accepted { payments, .. }) = intake else { panic!("batch {start}: {intake:?}") };
        assert!(payments.iter().all(|p| ids.insert(*p)), "payment ids are unique across the nodes");
        if start == 0 {
            first = payments;
        }
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut leader, now).await.unwrap();
        leader.check_staging().unwrap();
        standby.tick(now).await.unwrap();
    }

    // The batch the standby took, sent again to the leader: the original answer; with another
    // body, a conflict — the claim is one row, whichever node took it.
    leader.begin_turn().await.unwrap();
    let again = leader.submit(MerchantId(1), "batch-0", &drafts(0, 500), now).await.unwrap();
    assert!(matches!(again, Intake::Duplicate { ref payments, .. } if *payments == first), "{again:?}");
    let conflict = leader.submit(MerchantId(1), "batch-0", &drafts(7_000, 500), now).await;
    assert!(matches!(conflict, Err(IntakeError::Conflict { .. })), "{conflict:?}");
    leader.end_turn().await.unwrap();

    // While one node holds the turn, another waits at most the bound, then is refused and
    // changes nothing.
    standby.begin_turn().await.unwrap();
    let tip = leader.journal().stored_tip().unwrap();
    assert!(leader.begin_turn().await.is_err(), "the turn is the standby's");
    now = now.saturating_add_ms(BLOCK_MS);
    world.advance(now);
    assert!(leader.tick(now).await.is_err(), "no round without the turn");
    assert_eq!(leader.journal().stored_tip().unwrap(), tip, "nothing was journaled");
    standby.end_turn().await.unwrap();

    for _ in 0..300 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut leader, now).await.unwrap();
        leader.check_staging().unwrap();
        if leader.state().book.payments.values().all(|p| p.state.is_terminal()) {
            break;
        }
    }
    check_paid_exactly_once(&leader, &world, total);
    // One chain, and both nodes hold the state it gives.
    assert_eq!(leader.journal().verify().unwrap(), leader.journal().stored_tip().unwrap());
    standby.tick(now).await.unwrap();
    assert_eq!(standby.applied(), leader.applied());
    assert_eq!(standby.state().state_hash(), leader.state().state_hash());
}
