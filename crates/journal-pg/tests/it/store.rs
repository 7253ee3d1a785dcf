//! `journal::Journal` on the PostgreSQL store, driven as the engine drives it: from inside an
//! async runtime (the store keeps the blocking client off its worker threads), with group
//! commits, claims, history, snapshots, recovery and a reopen continuing the chain.

use std::sync::Arc;

use journal::{Append, Appended, Claim, Config, HistoryOp, Journal, Replica};
use journal_pg::{PgJournal, PgStore};

use super::Cluster;

/// A replica that sums its records' lengths: recovery must give the same sum from a snapshot
/// plus the tail as from every record.
#[derive(Debug, PartialEq)]
struct Sum(u64);

impl Replica for Sum {
    type Error = String;
    type Context = ();
    fn empty(_: &()) -> Sum {
        Sum(0)
    }
    fn apply(&mut self, _seq: u64, payload: &[u8]) -> Result<(), String> {
        self.0 += payload.len() as u64;
        Ok(())
    }
    fn encode(&self) -> Vec<Vec<u8>> {
        vec![self.0.to_le_bytes()[..4].to_vec(), self.0.to_le_bytes()[4..].to_vec()]
    }
    fn decode(parts: &[Vec<u8>], _: &()) -> Result<Sum, String> {
        Ok(Sum(u64::from_le_bytes(parts.concat().try_into().map_err(|_| "8 bytes")?)))
    }
}

fn open(url: &str) -> Journal {
    Journal::with_store(Arc::new(PgStore::connect(url).unwrap()), Config::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_runs_on_postgres_from_inside_an_async_runtime() {
    let cluster = Cluster::start();
    let journal = open(&cluster.url);
    // Many appends queued at once: the writer groups them into few transactions.
    let tickets: Vec<_> = (0..200u32)
        .map(|i| journal.submit_append(Append { payloads: vec![vec![1; (i % 7 + 1) as usize]], ..Append::default() }))
        .collect::<Result<_, _>>()
        .unwrap();
    let mut seqs = Vec::new();
    for ticket in tickets {
        let Appended::Committed { first, last } = ticket.await.unwrap() else { panic!() };
        seqs.extend(first..=last);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "every append, once, in one sequence");
    // A claim and its history ops commit with the records; a second use of the key adds nothing.
    let claim = Claim { merchant: "m".into(), key: "k".into(), batch: 9, body_hash: [3; 32] };
    let history = vec![
        HistoryOp::Put { key: b"p/1".to_vec(), value: b"one".to_vec() },
        HistoryOp::Put { key: b"p/2".to_vec(), value: b"two".to_vec() },
        HistoryOp::Put { key: b"q/1".to_vec(), value: b"other".to_vec() },
        HistoryOp::Add { key: b"total".to_vec(), amount: 40 },
    ];
    let append = Append { payloads: vec![b"batch".to_vec()], claim: Some(claim.clone()), history };
    assert_eq!(
        journal.submit_append(append.clone()).unwrap().await.unwrap(),
        Appended::Committed { first: 201, last: 201 }
    );
    let again = journal.submit_append(append).unwrap().await.unwrap();
    assert!(matches!(again, Appended::Duplicate(entry) if entry.batch == 9));
    assert_eq!(journal.tip(), 201);
    assert_eq!(journal.idempotency("m", "k").unwrap().map(|e| e.batch), Some(9));
    assert_eq!(journal.history(b"p/2").unwrap(), Some(b"two".to_vec()));
    assert_eq!(journal.history_counter(b"total").unwrap(), 40);
    let scan = journal.history_scan(b"p/", None, 10).unwrap();
    assert_eq!(scan.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(), vec![b"p/1".as_slice(), b"p/2"]);
    assert_eq!(journal.history_scan(b"p/", Some(b"p/1"), 10).unwrap().len(), 1);
    assert_eq!(journal.history_prefixes_used(&[b"q/".to_vec(), b"r/".to_vec()]).unwrap(), vec![true, false]);
    assert_eq!(journal.history_keys_many(&[b"p/".to_vec()], 1).unwrap(), vec![vec![b"p/1".to_vec()]]);
    // Snapshot, more records, recovery from snapshot plus tail = the full replay.
    journal.write_snapshot_async(201, Sum(journal.recover::<Sum>().unwrap().state.0).encode()).await.unwrap();
    journal.submit_append(Append { payloads: vec![vec![0; 11]], ..Append::default() }).unwrap().await.unwrap();
    let recovered = journal.recover::<Sum>().unwrap();
    assert_eq!((recovered.snapshot_seq, recovered.replayed, recovered.seq), (Some(201), 1, 202));
    let expected: u64 = (0..200u64).map(|i| i % 7 + 1).sum::<u64>() + 5 + 11;
    assert_eq!(recovered.state, Sum(expected));
    assert_eq!(journal.verify().unwrap(), 202);
    drop(journal);
    // Reopened (a restart): the chain continues where it ended.
    let journal = open(&cluster.url);
    assert_eq!(journal.tip(), 202);
    assert_eq!(journal.append(b"after".to_vec()).unwrap(), 203);
    assert_eq!(journal.verify().unwrap(), 203);
}

#[test]
fn another_writer_makes_the_journal_refuse_rather_than_interleave() {
    let cluster = Cluster::start();
    let journal = open(&cluster.url);
    journal.append(b"mine".to_vec()).unwrap();
    // Someone else appends to the same database behind this journal's back.
    PgJournal::connect(&cluster.url)
        .unwrap()
        .append(&journal_pg::PgAppend { payloads: vec![b"theirs".to_vec()], ..Default::default() })
        .unwrap();
    let Err(error) = journal.append(b"mine again".to_vec()) else { panic!("refused") };
    assert!(error.to_string().contains("behind"), "{error}");
    assert!(journal.is_poisoned(), "the journal stops: its state no longer follows the records");
    assert_eq!(PgJournal::connect(&cluster.url).unwrap().verify().unwrap(), 2);
}
