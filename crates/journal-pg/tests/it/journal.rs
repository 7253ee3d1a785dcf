use std::sync::Arc;
use std::time::{Duration, Instant};

use journal::{Appended, Claim, HistoryOp};
use journal_pg::{PgAppend, PgError, PgJournal, SCHEMA_VERSION};

use super::Cluster;

fn records(payloads: &[&str]) -> PgAppend {
    PgAppend { payloads: payloads.iter().map(|p| p.as_bytes().to_vec()).collect(), ..PgAppend::default() }
}

#[test]
fn the_schema_is_migrated_once_and_a_newer_one_is_refused() {
    let cluster = Cluster::start();
    let first = PgJournal::connect(&cluster.url).unwrap();
    let second = PgJournal::connect(&cluster.url).unwrap(); // a second node: nothing to do
    assert_eq!(first.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(second.tip().unwrap().0, 0);
    let mut raw = postgres::Client::connect(&cluster.url, postgres::NoTls).unwrap();
    let versions: i64 = raw.query_one("SELECT count(*) FROM railyard_schema", &[]).unwrap().get(0);
    assert_eq!(versions, i64::from(SCHEMA_VERSION), "each migration applied once");
    raw.execute("INSERT INTO railyard_schema (version) VALUES ($1)", &[&(SCHEMA_VERSION + 1)]).unwrap();
    let Err(PgError::Schema(why)) = PgJournal::connect(&cluster.url) else { panic!("a newer schema is refused") };
    assert!(why.contains("newer"), "{why}");
}

#[test]
fn appends_from_two_nodes_form_one_hash_chain_with_every_record_once() {
    let cluster = Cluster::start();
    let nodes =
        [Arc::new(PgJournal::connect(&cluster.url).unwrap()), Arc::new(PgJournal::connect(&cluster.url).unwrap())];
    let threads: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let node = Arc::clone(node);
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..150 {
                    let payloads: Vec<String> = (0..=i % 3).map(|r| format!("node{n}-append{i}-record{r}")).collect();
                    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
                    let Appended::Committed { first, last } = node.append(&records(&refs)).unwrap() else { panic!() };
                    assert_eq!(last - first + 1, payloads.len() as u64);
                    acknowledged.extend((first..=last).zip(payloads));
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged: Vec<(u64, String)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    acknowledged.sort();
    let total = acknowledged.len() as u64;
    assert_eq!(nodes[0].verify().unwrap(), total, "one chain, verified end to end");
    let read = nodes[1].read_range(1, usize::MAX).unwrap();
    let read: Vec<(u64, String)> = read.into_iter().map(|r| (r.seq, String::from_utf8(r.payload).unwrap())).collect();
    assert_eq!(read, acknowledged, "every acknowledged record, once, at the sequence number it was given");
    assert_eq!(nodes[1].read_range(total - 1, 10).unwrap().len(), 2, "a read from inside a frame");
}

#[test]
fn an_idempotency_claim_is_taken_by_one_node_only() {
    let cluster = Cluster::start();
    let nodes =
        [Arc::new(PgJournal::connect(&cluster.url).unwrap()), Arc::new(PgJournal::connect(&cluster.url).unwrap())];
    let outcomes: Vec<Appended> = nodes
        .iter()
        .enumerate()
        .map(|(n, node)| {
            let node = Arc::clone(node);
            std::thread::spawn(move || {
                let claim = Claim {
                    merchant: "m1".into(),
                    key: "payouts-7".into(),
                    batch: n as u128 + 100,
                    body_hash: [u8::try_from(n).unwrap(); 32],
                };
                node.append(&PgAppend { claim: Some(claim), ..records(&["batch", "payment"]) }).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let winners: Vec<usize> = (0..2).filter(|n| matches!(outcomes[*n], Appended::Committed { .. })).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    let Appended::Duplicate(entry) = outcomes[1 - winner] else { panic!("{outcomes:?}") };
    assert_eq!(entry.batch, winner as u128 + 100, "the loser is told the winner's batch");
    assert_eq!(nodes[0].verify().unwrap(), 2, "the duplicate appended nothing");
    assert_eq!(nodes[1].idempotency("m1", "payouts-7").unwrap(), Some(entry));
}

#[test]
fn a_node_that_lost_its_lease_can_never_append_under_it() {
    let cluster = Cluster::start();
    let a = PgJournal::connect(&cluster.url).unwrap();
    let b = PgJournal::connect(&cluster.url).unwrap();
    let lease_a = a.acquire_lease("rail:base", "node-a", 500).unwrap().expect("free");
    assert_eq!(lease_a.token, 1);
    assert!(b.acquire_lease("rail:base", "node-b", 500).unwrap().is_none(), "held by a");
    a.append(&PgAppend { fence: Some(lease_a.fence()), ..records(&["a decides"]) }).unwrap();
    assert!(a.renew_lease(&lease_a, 500).unwrap());
    // a stops (a pause, a partition) past its expiry; b takes the lease with a newer token.
    std::thread::sleep(Duration::from_millis(700));
    let lease_b = b.acquire_lease("rail:base", "node-b", 10_000).unwrap().expect("expired, so free");
    assert_eq!(lease_b.token, 2);
    // a wakes: its append under the old token is refused in the same transaction, and it
    // learns it lost the lease.
    let tip = a.tip().unwrap();
    let Err(PgError::Fenced { token: 1, current: Some(2), .. }) =
        a.append(&PgAppend { fence: Some(lease_a.fence()), ..records(&["a, woken"]) })
    else {
        panic!("fenced")
    };
    assert_eq!(a.tip().unwrap(), tip, "nothing appended");
    assert!(!a.renew_lease(&lease_a, 500).unwrap(), "lost");
    // b appends; an append decided on a stale tip is refused as behind.
    b.append(&PgAppend { fence: Some(lease_b.fence()), expected_tip: Some(tip.0), ..records(&["b decides"]) }).unwrap();
    let Err(PgError::Behind { expected, tip: now }) =
        b.append(&PgAppend { fence: Some(lease_b.fence()), expected_tip: Some(tip.0), ..records(&["stale"]) })
    else {
        panic!("behind")
    };
    assert_eq!((expected, now), (tip.0, tip.0 + 1));
    // Released, the lease is free at once.
    b.release_lease(&lease_b).unwrap();
    assert_eq!(a.acquire_lease("rail:base", "node-a", 500).unwrap().map(|l| l.token), Some(3));
    assert_eq!(a.verify().unwrap(), 2);
}

#[test]
fn history_counters_and_snapshots_follow_the_chain() {
    let cluster = Cluster::start();
    let j = PgJournal::connect(&cluster.url).unwrap();
    let put = |key: &str, value: &str| HistoryOp::Put { key: key.into(), value: value.into() };
    let add = |amount| HistoryOp::Add { key: b"total".to_vec(), amount };
    j.append(&PgAppend { history: vec![put("p1", "settled"), add(5)], ..records(&["one"]) }).unwrap();
    j.append(&PgAppend { history: vec![add(7), put("p1", "final")], ..records(&["two", "three"]) }).unwrap();
    assert_eq!(j.history(b"p1").unwrap(), Some(b"final".to_vec()));
    assert_eq!(j.history(b"total").unwrap(), Some(12u128.to_le_bytes().to_vec()));
    // Within one append, in order: an add to the stored value, a put over it, an add to that.
    let reset = HistoryOp::Put { key: b"total".to_vec(), value: 100u128.to_le_bytes().to_vec() };
    j.append(&PgAppend { history: vec![add(1), reset, add(2)], ..records(&["four"]) }).unwrap();
    assert_eq!(j.history(b"total").unwrap(), Some(102u128.to_le_bytes().to_vec()));
    assert_eq!(j.history(b"absent").unwrap(), None);
    assert!(matches!(
        j.write_snapshot(9, &[b"x".to_vec()]),
        Err(PgError::Journal(journal::JournalError::SnapshotBeyondTip { .. }))
    ));
    assert!(matches!(j.write_snapshot(2, &[b"x".to_vec()]), Err(PgError::Invalid(_))), "inside a frame");
    j.write_snapshot(1, &[b"state after one".to_vec()]).unwrap();
    j.write_snapshot(3, &[b"state after ".to_vec(), b"three".to_vec()]).unwrap();
    let snapshot = j.latest_snapshot().unwrap().unwrap();
    assert_eq!((snapshot.seq, snapshot.parts.concat().as_slice()), (3, b"state after three".as_slice()));
    assert_eq!(snapshot.parts.len(), 2, "its parts are kept apart");
    assert!(matches!(j.append(&records(&[])), Err(PgError::Invalid(_))), "an empty append changes nothing");
    assert_eq!(j.verify().unwrap(), 4);
}

#[test]
fn a_postgres_restart_is_errors_then_service_again_and_nothing_is_lost() {
    let cluster = Cluster::start();
    let j = PgJournal::connect(&cluster.url).unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let payload = format!("before-{i}");
        if let Appended::Committed { first, .. } = j.append(&records(&[&payload])).unwrap() {
            acknowledged.push((first, payload));
        }
    }
    cluster.restart(); // immediate stop, as a crash, then start
    let started = Instant::now();
    let mut errors = 0;
    let mut i = 0;
    while acknowledged.len() < 40 {
        assert!(started.elapsed() < Duration::from_secs(30), "no service within 30 s of the restart");
        let payload = format!("after-{i}");
        i += 1;
        match j.append(&records(&[&payload])) {
            Ok(Appended::Committed { first, .. }) => acknowledged.push((first, payload)),
            Ok(other) => panic!("{other:?}"),
            Err(PgError::Unavailable(_)) => errors += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(errors >= 1, "the connection the restart broke was an error, not a silent success");
    let read: Vec<(u64, String)> = j
        .read_range(1, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.seq, String::from_utf8(r.payload).unwrap()))
        .collect();
    assert_eq!(read, acknowledged, "exactly the acknowledged records: none lost, none unacknowledged");
    assert_eq!(j.verify().unwrap(), 40);
}

#[test]
fn a_tailing_node_wakes_on_an_append_and_times_out_without_one() {
    let cluster = Cluster::start();
    let writer = PgJournal::connect(&cluster.url).unwrap();
    let mut tail = journal_pg::Tail::listen(&cluster.url).unwrap();
    // Nothing appended: the wait ends at its timeout with the same tip.
    let started = Instant::now();
    assert_eq!(tail.wait(0, Duration::from_millis(300)).unwrap(), 0);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // An append from another node 200 ms in wakes it long before its 20 s timeout.
    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        writer.append(&records(&["one", "two"])).unwrap();
        writer
    });
    let started = Instant::now();
    assert_eq!(tail.wait(0, Duration::from_secs(20)).unwrap(), 2);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "woken by the notice, not the timeout: {waited:?}");
    let writer = appender.join().unwrap();
    // Already past: no wait at all.
    writer.append(&records(&["three"])).unwrap();
    assert_eq!(tail.wait(2, Duration::from_secs(20)).unwrap(), 3);
}
