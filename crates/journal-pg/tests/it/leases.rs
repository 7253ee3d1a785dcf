//! A node's lease keeper against a real PostgreSQL: it keeps a lease past many lease times,
//! gives it up when dropped (another node takes it at once, with the next token), and stops
//! acting within one lease time when the database hangs (SIGSTOP), holding it again — alone —
//! once the database is back.

use std::time::{Duration, Instant};

use journal_pg::{LeaseKeeper, PgAppend, PgError, PgJournal};

use super::Cluster;

const LEASE: &str = "rail:base";

/// Polls `what` every 20 ms until it is `Some`, for at most `within`.
fn eventually<T>(within: Duration, mut what: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = what() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_kept_lease_outlives_many_lease_times_and_is_given_up_on_drop() {
    let cluster = Cluster::start();
    let other = PgJournal::connect(&cluster.url).unwrap();
    let keeper = LeaseKeeper::start(&cluster.url, "node-a", vec![LEASE.into()], Duration::from_millis(400)).unwrap();
    let fence = eventually(Duration::from_secs(5), || keeper.fence(LEASE)).expect("taken");
    std::thread::sleep(Duration::from_millis(1_500)); // almost four lease times
    assert_eq!(keeper.fence(LEASE), Some(fence.clone()), "renewed, same token");
    assert!(other.acquire_lease(LEASE, "node-b", 400).unwrap().is_none(), "held by node-a");
    other
        .append(&PgAppend { payloads: vec![b"a".to_vec()], fence: Some(fence.clone()), ..PgAppend::default() })
        .unwrap();
    drop(keeper);
    let taken = eventually(Duration::from_secs(5), || other.acquire_lease(LEASE, "node-b", 400).unwrap());
    assert_eq!(taken.map(|l| l.token), Some(fence.token + 1), "released: taken at once, next token");
}

#[test]
fn a_node_whose_database_hangs_stops_acting_within_one_lease_time() {
    let cluster = Cluster::start();
    let ttl = Duration::from_millis(600);
    let a = LeaseKeeper::start(&cluster.url, "node-a", vec![LEASE.into()], ttl).unwrap();
    let fence_a = eventually(Duration::from_secs(5), || a.fence(LEASE)).expect("taken");
    cluster.pause();
    let paused = Instant::now();
    // No answer will come: node-a stops at its local deadline, not at some timeout.
    assert!(eventually(Duration::from_secs(3), || a.fence(LEASE).is_none().then_some(())).is_some());
    let stopped_after = paused.elapsed();
    // Within one lease time of its last renewal; two of the hang, with room for a loaded machine.
    assert!(stopped_after <= 2 * ttl, "stopped {stopped_after:?} after the database hung");
    cluster.resume();
    // Back: node-a holds it again (renewed if it had not expired on PostgreSQL's clock, else
    // taken anew with the next token), and it alone: node-b cannot take it meanwhile.
    let again = eventually(Duration::from_secs(10), || a.fence(LEASE)).expect("held again");
    assert!(again.token >= fence_a.token);
    let b = PgJournal::connect(&cluster.url).unwrap();
    assert!(b.acquire_lease(LEASE, "node-b", 60_000).unwrap().is_none(), "node-a holds it");
    if again.token > fence_a.token {
        // It expired while the database hung: the old token fences nothing any more.
        let Err(PgError::Fenced { .. }) =
            b.append(&PgAppend { payloads: vec![b"late".to_vec()], fence: Some(fence_a), ..PgAppend::default() })
        else {
            panic!("fenced")
        };
    }
    eprintln!("lease keeper: stopped acting {stopped_after:?} after the database hung (lease {ttl:?})");
}

/// Work leases spread over the live nodes (`start_shared`): a node alone takes them all; as
/// others join, each ends with its fair share (here one of three), and when one leaves, the
/// others take its share; no lease is ever held by two nodes at once.
#[test]
fn work_leases_spread_over_the_live_nodes_and_follow_them() {
    let cluster = Cluster::start();
    let ttl = Duration::from_millis(600);
    let work: Vec<String> = ["coordinator", "rail:base", "rail:optimism"].map(String::from).to_vec();
    let start = |holder: &str| LeaseKeeper::start_shared(&cluster.url, holder, work.clone(), ttl).unwrap();
    let counts = |keepers: &[&LeaseKeeper]| -> Vec<usize> {
        keepers.iter().map(|k| k.held().iter().filter(|(name, _)| !name.starts_with("node:")).count()).collect()
    };
    let a = start("a");
    assert!(a.first_round(ttl));
    assert_eq!(counts(&[&a]), [3], "alone, a node takes every work lease");
    let b = start("b");
    let c = start("c");
    let spread = eventually(Duration::from_secs(10), || (counts(&[&a, &b, &c]) == [1, 1, 1]).then_some(()));
    assert!(spread.is_some(), "each of three nodes holds one: {:?}", counts(&[&a, &b, &c]));
    for name in &work {
        let holders = [&a, &b, &c].iter().filter(|k| k.fence(name).is_some()).count();
        assert_eq!(holders, 1, "{name} has one holder");
    }
    drop(c);
    let taken = eventually(Duration::from_secs(10), || {
        let held = counts(&[&a, &b]);
        (held.iter().sum::<usize>() == 3).then_some(held)
    });
    assert!(taken.is_some_and(|held| held.contains(&2)), "the leaver's share went to the others");
}
