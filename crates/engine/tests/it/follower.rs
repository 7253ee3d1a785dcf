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

use super::{BLOCK_MS, T0, World, config, fund, submit_all};

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
