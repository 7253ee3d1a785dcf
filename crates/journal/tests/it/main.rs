//! Journal behaviour on a real file: appends and reads, group commit under concurrency,
//! idempotency claims, bad input, corruption, snapshots and recovery.

use std::collections::BTreeSet;
use std::path::Path;

use journal::*;

fn open(path: &Path) -> Journal {
    Journal::open(path, Config::default()).unwrap()
}

fn payload(n: u64) -> Vec<u8> {
    format!("event-{n:08}").into_bytes()
}

#[test]
fn appends_are_sequenced_chained_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    {
        let journal = open(&path);
        assert_eq!(journal.tip(), 0);
        assert_eq!(journal.append(payload(1)).unwrap(), 1);
        assert_eq!(journal.append_batch((2..=10).map(payload).collect()).unwrap(), (2, 10));
        assert_eq!(journal.tip(), 10);
    }
    let journal = open(&path);
    assert_eq!(journal.tip(), 10);
    assert_eq!(journal.append(payload(11)).unwrap(), 11);
    assert_eq!(journal.verify().unwrap(), 11);
    let records = journal.read_range(1, 100).unwrap();
    let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.payload.clone()).collect();
    assert_eq!(payloads, (1..=11).map(payload).collect::<Vec<_>>());
    assert_eq!(journal.read(5).unwrap().payload, payload(5));
    assert_eq!(journal.read_range(4, 2).unwrap().len(), 2);
    assert!(journal.read_range(12, 10).unwrap().is_empty());
    assert!(journal.read(12).is_err());
    assert!(journal.read_range(0, 1).is_err());
}

#[test]
fn concurrent_appends_get_unique_contiguous_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir.path().join("journal.redb"));
    let threads = 8;
    let per_thread = 100;
    let results: Vec<Vec<(u64, Vec<u8>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let journal = journal.clone();
                scope.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let body = format!("t{t}-{i}").into_bytes();
                            (journal.append(body.clone()).unwrap(), body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<(u64, Vec<u8>)> = results.into_iter().flatten().collect();
    let seqs: BTreeSet<u64> = all.iter().map(|(seq, _)| *seq).collect();
    let total = threads * per_thread;
    assert_eq!(seqs.len(), total, "every acknowledged append has its own sequence number");
    assert_eq!(seqs.iter().copied().collect::<Vec<_>>(), (1..=total as u64).collect::<Vec<_>>());
    for (seq, body) in &all {
        assert_eq!(&journal.read(*seq).unwrap().payload, body, "record {seq}");
    }
    assert_eq!(journal.verify().unwrap(), total as u64);
}

#[test]
fn idempotency_claims_take_effect_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let claim =
        |batch: u128, hash: u8| Claim { merchant: "m1".into(), key: "key-1".into(), batch, body_hash: [hash; 32] };
    {
        let journal = open(&path);
        // Many claims for one key race; exactly one wins and the rest see the winner.
        let outcomes: Vec<Appended> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6u8)
                .map(|n| {
                    let journal = journal.clone();
                    scope.spawn(move || {
                        journal.submit(vec![vec![n]], Some(claim(u128::from(n), n))).unwrap().wait().unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let committed: Vec<_> = outcomes.iter().filter(|o| matches!(o, Appended::Committed { .. })).collect();
        assert_eq!(committed.len(), 1, "{outcomes:?}");
        assert_eq!(journal.tip(), 1, "duplicates append nothing");
        let winner = journal.idempotency("m1", "key-1").unwrap().unwrap();
        let winner_byte = journal.read(1).unwrap().payload[0];
        assert_eq!(winner, IdempotencyEntry { batch: u128::from(winner_byte), body_hash: [winner_byte; 32] });
        for outcome in outcomes.iter().filter(|o| matches!(o, Appended::Duplicate(_))) {
            assert_eq!(*outcome, Appended::Duplicate(winner));
        }
        // Other merchants and keys are independent.
        let other = Claim { merchant: "m2".into(), ..claim(9, 9) };
        assert!(matches!(
            journal.submit(vec![vec![9]], Some(other)).unwrap().wait().unwrap(),
            Appended::Committed { .. }
        ));
    }
    let journal = open(&path);
    let again = journal.submit(vec![vec![1]], Some(claim(77, 77))).unwrap().wait().unwrap();
    assert!(matches!(again, Appended::Duplicate(IdempotencyEntry { .. })), "claims survive reopen");
    assert_eq!(journal.tip(), 2);
    assert_eq!(journal.idempotency("m1", "nope").unwrap(), None);
}

#[test]
fn bad_appends_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { record_bytes_max: 64, append_records_max: 3, ..Config::default() };
    let journal = Journal::open(dir.path().join("journal.redb"), config).unwrap();
    journal.append(payload(1)).unwrap();
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (vec![], "1 to 3 records"),
        (vec![vec![0; 4]; 4], "1 to 3 records"),
        (vec![vec![0; 4], vec![0; 65]], "65 bytes exceeds the 64-byte limit"),
    ];
    for (payloads, reason) in cases {
        let error = journal.submit(payloads, None).unwrap_err().to_string();
        assert!(error.contains(reason), "{error}");
    }
    assert_eq!(journal.tip(), 1);
    assert!(matches!(journal.write_snapshot(5, vec![vec![]]), Err(JournalError::SnapshotBeyondTip { seq: 5, tip: 1 })));
    assert_eq!(journal.append(payload(2)).unwrap(), 2, "a refused request does not poison the journal");
    assert_eq!(journal.verify().unwrap(), 2);
}

/// Flips one byte of record `target`'s payload in the file and expects a loud error naming it.
#[test]
fn a_flipped_byte_is_a_loud_error_with_its_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let target = 37;
    {
        let journal = open(&path);
        for n in 1..=64 {
            journal.append(format!("MARKER-{n:04}-payload-bytes").into_bytes()).unwrap();
        }
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let needle = format!("MARKER-{target:04}-payload-bytes").into_bytes();
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("payload is stored in the file");
    bytes[at + 12] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();

    let journal = open(&path);
    let expected = |error: JournalError| matches!(error, JournalError::Corrupt { seq, .. } if seq == target);
    assert!(expected(journal.verify().unwrap_err()));
    assert!(expected(journal.read_range(1, 100).unwrap_err()));
    assert!(expected(journal.read(target).unwrap_err()));
    assert!(expected(journal.read(target + 1).unwrap_err()), "the next record's chain link is checked too");
    assert_eq!(journal.read(target - 1).unwrap().seq, target - 1, "records before it still read");
    let message = journal.verify().unwrap_err().to_string();
    assert!(message.contains("record 37 is corrupt"), "{message}");
    assert!(matches!(journal.recover::<Digest>(), Err(RecoverError::Journal(JournalError::Corrupt { seq: 37, .. }))));
}

/// A replica for tests: a count and a running hash of every payload, in order.
#[derive(Debug, PartialEq, Eq)]
struct Digest {
    count: u64,
    hash: [u8; 32],
}

impl Replica for Digest {
    type Error = String;
    type Context = ();
    fn empty(_: &()) -> Digest {
        Digest { count: 0, hash: [0; 32] }
    }
    fn apply(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        if seq != self.count + 1 {
            return Err(format!("record {seq} out of order after {}", self.count));
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.hash);
        hasher.update(payload);
        self.hash = *hasher.finalize().as_bytes();
        self.count = seq;
        Ok(())
    }
    fn encode(&self) -> Vec<Vec<u8>> {
        // Two parts: the journal keeps a snapshot's parts apart and gives them back in order.
        vec![self.count.to_le_bytes().to_vec(), self.hash.to_vec()]
    }
    fn decode(parts: &[Vec<u8>], _: &()) -> Result<Digest, String> {
        let bytes = parts.concat();
        let count = u64::from_le_bytes(bytes.get(..8).ok_or("short")?.try_into().map_err(|_| "short")?);
        let hash = bytes.get(8..40).ok_or("short")?.try_into().map_err(|_| "short")?;
        Ok(Digest { count, hash })
    }
}

#[test]
fn recovery_from_snapshot_equals_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let config = Config { snapshots_kept: 2, read_chunk: 64, ..Config::default() };
    {
        let journal = Journal::open(&path, config.clone()).unwrap();
        let empty = journal.recover::<Digest>().unwrap();
        assert_eq!((empty.seq, empty.replayed, empty.snapshot_seq), (0, 0, None));
        journal.append_batch((1..=600).map(payload).collect()).unwrap();
        for at in [200, 400, 600] {
            let state = Digest::decode(&full_replay(&journal, at), &()).unwrap();
            journal.write_snapshot(at, state.encode()).unwrap();
        }
        journal.append_batch((601..=1000).map(payload).collect()).unwrap();
    }
    let journal = Journal::open(&path, config).unwrap();
    let recovered = journal.recover::<Digest>().unwrap();
    assert_eq!((recovered.seq, recovered.snapshot_seq, recovered.replayed), (1000, Some(600), 400));
    assert_eq!(
        recovered.state.encode(),
        full_replay(&journal, 1000),
        "snapshot + tail is bit-identical to a full replay"
    );
    assert_eq!(recovered.state.count, 1000);
}

/// Replays records 1..=upto into an empty Digest and returns its encoding.
fn full_replay(journal: &Journal, upto: u64) -> Vec<Vec<u8>> {
    let mut state = Digest::empty(&());
    for record in journal.read_range(1, usize::try_from(upto).unwrap()).unwrap() {
        state.apply(record.seq, &record.payload).unwrap();
    }
    state.encode()
}

#[test]
fn a_corrupt_snapshot_is_a_loud_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    {
        let journal = open(&path);
        journal.append_batch((1..=10).map(payload).collect()).unwrap();
        journal.write_snapshot(10, vec![b"SNAPSHOT-".to_vec(), b"STATE-BYTES".to_vec()]).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(11).position(|w| w == b"STATE-BYTES").unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let journal = open(&path);
    assert!(matches!(journal.latest_snapshot(), Err(JournalError::CorruptSnapshot { seq: 10, .. })));
}

/// An injected commit failure behaves like a failed fsync: the failing commit writes nothing,
/// every later write is refused, and a reopened journal holds exactly what was acknowledged.
#[test]
fn an_injected_commit_failure_poisons_until_reopen_and_loses_only_the_unacknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    {
        let journal = open(&path);
        journal.fail_after(2);
        assert_eq!(journal.append(payload(1)).unwrap(), 1);
        assert_eq!(journal.append(payload(2)).unwrap(), 2);
        assert!(!journal.is_poisoned());
        let error = journal.append(payload(3)).unwrap_err();
        assert!(error.to_string().contains("injected"), "{error}");
        assert!(journal.is_poisoned());
        assert_eq!(journal.append(payload(4)).unwrap_err(), JournalError::Poisoned);
        assert_eq!(journal.tip(), 2);
    }
    let journal = open(&path);
    assert!(!journal.is_poisoned(), "the fault is not part of the file");
    assert_eq!(journal.verify().unwrap(), 2);
    assert_eq!(journal.append(payload(3)).unwrap(), 3);
}

/// History writes commit with their records: together, or not at all (a taken claim, a failed
/// commit); counters add up; scans follow key order from a cursor.
#[test]
fn history_writes_commit_with_their_records_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir.path().join("journal.redb"));
    let put = |k: &str, v: &str| HistoryOp::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().to_vec() };
    let add = |k: &str, amount: u128| HistoryOp::Add { key: k.as_bytes().to_vec(), amount };
    let claim = |batch| Claim { merchant: "m".into(), key: "k".into(), batch, body_hash: [0; 32] };
    let append = |n, claim, history| Append { payloads: vec![payload(n)], claim, history };
    journal.submit_append(append(1, Some(claim(1)), vec![put("p/1", "one"), add("d/x", 5)])).unwrap().wait().unwrap();
    journal
        .submit_append(append(2, None, vec![put("p/2", "two"), add("d/x", 7), add("d/y", 1)]))
        .unwrap()
        .wait()
        .unwrap();
    let duplicate = journal.submit_append(append(3, Some(claim(9)), vec![put("p/3", "three")])).unwrap().wait();
    assert!(matches!(duplicate, Ok(Appended::Duplicate(_))));
    assert_eq!(journal.history(b"p/3").unwrap(), None, "a taken claim writes no history");
    journal.fail_after(0);
    assert!(journal.submit_append(append(4, None, vec![put("p/4", "four")])).unwrap().wait().is_err());
    assert_eq!(journal.history(b"p/4").unwrap(), None, "a failed commit writes no history");

    assert_eq!(journal.history(b"p/1").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(journal.history_counter(b"d/x").unwrap(), 12);
    assert_eq!(journal.history_counter(b"d/none").unwrap(), 0);
    let many = journal.history_many(&[b"p/2".to_vec(), b"p/9".to_vec()]).unwrap();
    assert_eq!(many, vec![Some(b"two".to_vec()), None]);
    let first = journal.history_scan(b"p/", None, 1).unwrap();
    assert_eq!(first, vec![(b"p/1".to_vec(), b"one".to_vec())]);
    let rest = journal.history_scan(b"p/", Some(b"p/1"), 10).unwrap();
    assert_eq!(rest, vec![(b"p/2".to_vec(), b"two".to_vec())]);
    assert!(journal.history_scan(b"p/", Some(b"p/2"), 10).unwrap().is_empty());
}

#[test]
fn keys_by_many_prefixes_match_one_scan_per_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let journal = open(&dir.path().join("journal.redb"));
    // Numbers 0..600 in steps of 3, some with several keys; gaps longer than the cursor's walk.
    let mut history = Vec::new();
    for n in (0..600).step_by(3) {
        for suffix in 0..(n % 4) {
            history.push(HistoryOp::Put { key: format!("r/{n:04}/{suffix}").into_bytes(), value: Vec::new() });
        }
    }
    history.push(HistoryOp::Put { key: b"q/last".to_vec(), value: Vec::new() });
    journal.submit_append(Append { payloads: vec![payload(1)], claim: None, history }).unwrap().wait().unwrap();

    let mut prefixes: Vec<Vec<u8>> = Vec::new();
    for n in [5, 3, 3, 0, 597, 599, 100, 102, 9, 12, 450, 7, 6, 6000] {
        prefixes.push(format!("r/{n:04}/").into_bytes());
    }
    // Prefixes that start one another (each must see the keys the shorter one took), and ends.
    for p in ["r/00", "r/0009/", "r/0009/2", "r/", "q/", "a", "z", ""] {
        prefixes.push(p.as_bytes().to_vec());
    }
    for count_max in [1, 2, 5, usize::MAX] {
        let expected: Vec<Vec<Vec<u8>>> = prefixes
            .iter()
            .map(|p| journal.history_scan(p, None, count_max).unwrap().into_iter().map(|(k, _)| k).collect())
            .collect();
        assert_eq!(journal.history_keys_many(&prefixes, count_max).unwrap(), expected, "count_max {count_max}");
    }
    assert_eq!(
        journal.history_prefixes_used(&prefixes).unwrap(),
        prefixes.iter().map(|p| !journal.history_scan(p, None, 1).unwrap().is_empty()).collect::<Vec<_>>()
    );
}
