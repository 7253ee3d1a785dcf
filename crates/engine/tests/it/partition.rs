//! Work partitioned between nodes (issue 14), three engines on one PostgreSQL journal: one
//! coordinates (routing, the queue, holds) and drives `base`; the others each drive one rail,
//! signing what the coordinator planned there, broadcasting and watching. Every node decides
//! in its turn. A node signs only on the rails it drives. Then the node driving `optimism`
//! goes away with a settlement in flight: what the coordinator planned there waits unsigned
//! and is released after the anomaly policy's bound, each release a failure on the
//! coordinator's breaker for the rail, which opens (failover moves its queue elsewhere);
//! another node takes the rail and finishes what was in flight. Every payment is paid exactly
//! once and every node ends with the state the journal gives.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use engine::*;
use journal::Journal;
use journal_pg::cluster::Cluster;
use journal_pg::{LeaseKeeper, PgStore};
use model::{Amount, Asset, Timestamp};

use super::faults::signing;
use super::follower::tick_in_turn;
use super::{BLOCK_MS, T0, World, check_paid_exactly_once, config, name, submit_all};

const TTL: Duration = Duration::from_millis(1_500);

struct Node {
    engine: Engine,
    /// What this node signed, per rail (base, optimism, arbitrum).
    signs: Vec<Arc<AtomicU64>>,
    _keeper: Arc<LeaseKeeper>,
}

async fn node(url: &str, world: &World, holder: &str, coordinator: bool, rails: &[&str], now: Timestamp) -> Node {
    let lease = format!("{holder}-work");
    let keeper = Arc::new(LeaseKeeper::start(url, holder, vec![lease.clone()], TTL).unwrap());
    assert!(keeper.first_round(TTL) && keeper.fence(&lease).is_some());
    let store = PgStore::connect_fenced(url, Arc::clone(&keeper), &lease).unwrap();
    let journal = Journal::with_store(Arc::new(store), config().journal).unwrap();
    let (wrapped, signs) = signing(world);
    let fence = Arc::clone(&keeper);
    let guard = Box::new(move || fence.fence(&lease).is_some()) as LeaseGuard;
    let acting = Acting { coordinator, rails: rails.iter().map(|r| name(r)).collect::<BTreeSet<_>>() };
    let engine = Engine::open_acting(journal, config(), wrapped, now, Some(acting), guard).await.unwrap();
    Node { engine, signs, _keeper: keeper }
}

fn signed(node: &Node) -> Vec<u64> {
    node.signs.iter().map(|s| s.load(Ordering::SeqCst)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_rails_and_each_payment_is_paid_once() {
    let cluster = Cluster::start();
    let url = journal_pg::database(&cluster.url, "partition").unwrap();
    let world = World::new();
    let mut a = node(&url, &world, "a", true, &["base"], T0).await;
    let mut b = node(&url, &world, "b", false, &["optimism"], T0).await;
    let mut c = node(&url, &world, "c", false, &["arbitrum"], T0).await;
    let total = 3_000;
    a.engine.begin_turn().await.unwrap();
    // USDC enough on base and on optimism for about a third of the payouts each, so that the
    // router uses every rail.
    for (i, (rail, usdc)) in
        [("base", 1_000_000u128), ("optimism", 1_000_000), ("arbitrum", 10u128.pow(13))].into_iter().enumerate()
    {
        a.engine.fund_pool(name(rail), Asset::USDC, Amount::new(usdc), 100 + i as u128, T0).await.unwrap();
        a.engine.fund_pool(name(rail), Asset::ETH, Amount::new(10u128.pow(13)), 200 + i as u128, T0).await.unwrap();
    }
    submit_all(&mut a.engine, total, T0).await;
    a.engine.end_turn().await.unwrap();

    // Rounds until every node has signed on its rail.
    let mut now = T0;
    for _ in 0..30 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        for node in [&mut a, &mut b, &mut c] {
            tick_in_turn(&mut node.engine, now).await.unwrap();
        }
        a.engine.check_staging().unwrap();
        if signed(&b)[1] > 0 && signed(&c)[2] > 0 {
            break;
        }
    }
    // Each node signed only on the rails it drives.
    let (sa, sb, sc) = (signed(&a), signed(&b), signed(&c));
    assert!(sa[0] > 0 && sb[1] > 0 && sc[2] > 0, "every node signed on its rail: {sa:?} {sb:?} {sc:?}");
    assert_eq!((sa[1], sa[2], sb[0], sb[2], sc[0], sc[1]), (0, 0, 0, 0, 0, 0), "{sa:?} {sb:?} {sc:?}");

    // The node driving optimism goes away; after a while another takes the rail.
    // What it had signed and not yet seen final: only the node that takes the rail next can
    // finish it (the coordinator never watches a rail it does not drive).
    let book = &b.engine.state().book;
    let in_flight = book
        .open_settlements()
        .iter()
        .map(|id| &book.settlements[id])
        .filter(|r| r.settlement.rail == name("optimism") && r.state != model::SettlementState::Planned)
        .count();
    assert!(in_flight > 0, "the node left a settlement in flight on its rail");
    drop(b);
    let mut breaker_opened = false;
    for _ in 0..30 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut a.engine, now).await.unwrap();
        tick_in_turn(&mut c.engine, now).await.unwrap();
        // What the coordinator planned there and had to release counts against the rail.
        let state = a.engine.breaker(name("optimism"), now);
        breaker_opened |= matches!(state, Some(router::BreakerState::Open { .. }));
    }
    assert!(breaker_opened, "the coordinator's breaker for the rail nobody drove never opened");
    drop(c);
    let mut c = node(&url, &world, "c2", false, &["optimism", "arbitrum"], now).await;
    for _ in 0..300 {
        now = now.saturating_add_ms(BLOCK_MS);
        world.advance(now);
        tick_in_turn(&mut a.engine, now).await.unwrap();
        tick_in_turn(&mut c.engine, now).await.unwrap();
        a.engine.check_staging().unwrap();
        if a.engine.state().book.payments.values().all(|p| p.state.is_terminal()) {
            break;
        }
    }
    check_paid_exactly_once(&a.engine, &world, total);
    // While no node drove optimism, what was planned there was released unsigned; the node
    // that took the rail signed there.
    let released = a
        .engine
        .journal()
        .read_range(1, 1_000_000)
        .unwrap()
        .iter()
        .filter(|r| matches!(model::Event::decode(&r.payload).unwrap(), model::Event::SettlementReleased { .. }))
        .count();
    assert!(released > 0, "nothing planned on the rail without a node was released");
    tick_in_turn(&mut c.engine, now).await.unwrap();
    assert_eq!(c.engine.applied(), a.engine.applied());
    assert_eq!(c.engine.state().state_hash(), a.engine.state().state_hash());
    assert_eq!(a.engine.journal().verify().unwrap(), a.engine.journal().stored_tip().unwrap());
    let (sa, sc) = (signed(&a), signed(&c));
    println!("signed per rail: coordinator {sa:?}, the node that took optimism {sc:?}; {released} released");
    assert_eq!((sa[1], sa[2]), (0, 0), "the coordinator never signed on a rail it does not drive");
    // The merchants' notices are the coordinator's to deliver, once: no other node offers them.
    assert!(!a.engine.outbox_page(None, 10).is_empty());
    assert!(c.engine.outbox_page(None, 10).is_empty(), "a node driving rails delivers no notices");
}
