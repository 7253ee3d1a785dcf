//! A second node following the shared PostgreSQL journal another node writes (issue 14's
//! replication by tailing): caught up at any point, its state is the writer's committed state,
//! hash for hash (the writer's live state is that plus what it staged for its next commit: the
//! outcomes of its last broadcasts); and it learns a batch the writer accepted, with no message
//! between the two nodes.

use std::sync::Arc;

use engine::*;
use journal::Journal;
use journal_pg::PgStore;
use journal_pg::cluster::Cluster;

use model::{Amount, Asset};

use super::{BLOCK_MS, T0, World, check_paid_exactly_once, config, fund, name, submit_all};

fn shared(url: &str) -> Journal {
    Journal::with_store(Arc::new(PgStore::connect(url).unwrap()), config().journal).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_tailing_the_shared_journal_has_the_writers_state_hash_for_hash() {
    let cluster = Cluster::start();
    let url = journal_pg::database(&cluster.url, "shared").unwrap();
    let world = World::new();
    let mut writer = Engine::open_on(shared(&url), config(), world.rails(), T0).await.unwrap();
    let mut follower = Follower::open(shared(&url), &config().state).unwrap();
    assert_eq!(follower.seq(), 0);
    fund(&mut writer, T0).await;
    submit_all(&mut writer, 2_000, T0).await;
    // The follower knows the batches the writer accepted once it caught up (queries on any node).
    follower.catch_up().unwrap();
    assert_eq!(follower.state().book.counts().values().sum::<u64>(), 2_000);
    let mut now = T0;
    let mut compared = 0;
    for round in 0..60 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        writer.tick(now).await.unwrap();
        if round % 4 == 0 {
            follower.catch_up().unwrap();
            assert_eq!(follower.seq(), writer.journal().tip(), "caught up with every record");
            let mut expected = follower.state().clone();
            for event in writer.staged() {
                expected.apply(event).unwrap();
                expected.book.take_retired();
            }
            assert_eq!(expected.state_hash(), writer.state().state_hash(), "round {round}: the same state");
            compared += 1;
        }
        if writer.state().book.payments.values().all(|p| p.state.is_terminal()) {
            break;
        }
    }
    // A last round commits what the writer staged; then the two are equal as they stand.
    now = now.saturating_add_ms(BLOCK_MS);
    writer.tick(now).await.unwrap();
    assert!(writer.staged().is_empty());
    follower.catch_up().unwrap();
    assert_eq!(follower.state().state_hash(), writer.state().state_hash());
    assert_eq!(writer.count_by_state().get("settled").copied(), Some(2_000));
    assert!(compared >= 3, "compared at {compared} points of the run");
    // A third node, opened now, recovers the same state from the journal alone.
    let late = Follower::open(shared(&url), &config().state).unwrap();
    assert_eq!(late.state().state_hash(), writer.state().state_hash());
}

/// A lease (issue 14's failover between nodes, in one process): a leader acts while
/// its lease is surely held; a standby follows its journal, answers from the same state and
/// refuses every command; when the leader's lease is gone it stops before its next round (no
/// commit, no broadcast), and the next holder opens the engine on the journal as a restart
/// would and finishes every payment exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_acts_only_under_its_lease_and_the_next_holder_finishes_the_work() {
    use journal_pg::LeaseKeeper;
    use std::time::Duration;
    let cluster = Cluster::start();
    let url = journal_pg::database(&cluster.url, "leased").unwrap();
    let ttl = Duration::from_millis(600);
    let leased = |keeper: &Arc<LeaseKeeper>| {
        let store = PgStore::connect_fenced(&url, Arc::clone(keeper), "engine").unwrap();
        let journal = Journal::with_store(Arc::new(store), config().journal).unwrap();
        let keeper = Arc::clone(keeper);
        (journal, Box::new(move || keeper.fence("engine").is_some()) as LeaseGuard)
    };
    let world = World::new();
    let a = Arc::new(LeaseKeeper::start(&url, "node-a", vec!["engine".into()], ttl).unwrap());
    assert!(a.first_round(ttl));
    let (journal, guard) = leased(&a);
    let mut leader = Engine::open_acting(journal, config(), world.rails(), T0, None, guard).await.unwrap();
    let mut standby = Engine::open_standby(shared(&url), config(), world.rails(), T0).unwrap();
    // A leader on the shared journal acts in its turn (see `turns`).
    leader.begin_turn().await.unwrap();
    fund(&mut leader, T0).await;
    submit_all(&mut leader, 1_000, T0).await;
    leader.end_turn().await.unwrap();
    let mut now = T0;
    for _ in 0..3 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut leader, now).await.unwrap();
    }
    // The standby follows: the same records, the same payments, and it acts on nothing.
    let before = standby.applied();
    standby.tick(now).await.unwrap();
    assert!(standby.applied() > before);
    assert_eq!(standby.applied(), leader.journal().tip());
    assert_eq!(standby.lag(), 0);
    assert_eq!(standby.state().book.counts().values().sum::<u64>(), 1_000);
    let refused = standby.fund_pool(name("base"), Asset::ETH, Amount::new(1), 999, now).await;
    assert!(matches!(refused, Err(EngineError::Standby)), "{refused:?}");
    assert!(standby.reconcile(now).await.is_err(), "a standby reconciles nothing");

    // The lease ends (the node gives it up; a node cut off from its database loses it the
    // same way, at its local deadline).
    a.stop();
    assert!(a.fence("engine").is_none());
    let tip = leader.journal().tip();
    now = now.saturating_add_ms(BLOCK_MS);
    world.advance(now);
    let stopped = tick_in_turn(&mut leader, now).await;
    assert!(matches!(stopped, Err(EngineError::Stopped(ref why)) if why.contains("lease")), "{stopped:?}");
    assert_eq!(leader.journal().tip(), tip, "nothing journaled after the lease ended");
    let unsettled = leader.count_by_state().get("settled").copied().unwrap_or(0);
    assert!(unsettled < 1_000, "work was left for the next holder ({unsettled} settled)");
    drop(leader);

    // Another node takes the lease and opens the engine; it finishes everything.
    let b = Arc::new(LeaseKeeper::start(&url, "node-b", vec!["engine".into()], ttl).unwrap());
    assert!(b.first_round(ttl) && b.fence("engine").is_some(), "the released lease is free");
    let token_b = b.held()[0].1;
    assert!(token_b >= 2, "a new holder, a newer token ({token_b})");
    let (journal, guard) = leased(&b);
    let mut next = Engine::open_acting(journal, config(), world.rails(), now, None, guard).await.unwrap();
    for _ in 0..200 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut next, now).await.unwrap();
        if next.state().book.payments.values().all(|p| p.state.is_terminal()) {
            break;
        }
    }
    check_paid_exactly_once(&next, &world, 1_000);
    standby.tick(now).await.unwrap();
    assert_eq!(standby.applied(), next.journal().tip());
    assert_eq!(standby.state().state_hash(), next.state().state_hash());
}

/// One round of a shared engine, in its turn.
pub(crate) async fn tick_in_turn(engine: &mut Engine, now: model::Timestamp) -> Result<(), EngineError> {
    engine.begin_turn().await?;
    let ticked = engine.tick(now).await;
    let ended = engine.end_turn().await;
    ticked.and(ended)
}
