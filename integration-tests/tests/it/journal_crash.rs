//! The journal under SIGKILL: a child process appends from several threads and prints every
//! acknowledged append; the parent kills it at a random point, reopens the journal and checks
//! that every acknowledged record is present exactly once, that nothing else is half there,
//! and that the hash chain verifies. Then it starts the next child on the same file.
//!
//! `RAILYARD_CRASH_KILLS` sets the number of kills (default 50); `RAILYARD_CRASH_SEED` the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use journal::{Config, Journal};

const WAIT_MAX: Duration = Duration::from_secs(30);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One acknowledged append, as the child printed it.
struct Ack {
    first: u64,
    last: u64,
    ids: Vec<String>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let body = line.strip_prefix("ACK ")?.strip_suffix(" END")?;
    let mut words = body.split(' ');
    let first = words.next()?.parse().ok()?;
    let last = words.next()?.parse().ok()?;
    Some(Ack { first, last, ids: words.map(str::to_owned).collect() })
}

#[test]
fn every_acknowledged_append_survives_sigkill_exactly_once() {
    let kills = env_u64("RAILYARD_CRASH_KILLS", 50);
    let seed = env_u64("RAILYARD_CRASH_SEED", 0x5eed);
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut acknowledged: BTreeMap<u64, String> = BTreeMap::new();
    let mut claims: Vec<(String, u64)> = Vec::new();
    let mut total_acks = 0usize;

    for run in 0..kills {
        // Kill points: sometimes while the child is still opening (recovering) the journal,
        // otherwise after a random number of acknowledgements.
        let acks_before_kill = if rng.u8(..10) == 0 { 0 } else { rng.usize(1..300) };
        let acks = run_and_kill(&path, run, acks_before_kill);
        total_acks += acks.len();
        for ack in acks {
            assert_eq!(ack.last - ack.first + 1, ack.ids.len() as u64, "run {run}: ack covers its records");
            for (seq, id) in (ack.first..=ack.last).zip(&ack.ids) {
                if id.contains("-t0-") {
                    claims.push((id.clone(), seq));
                }
                let previous = acknowledged.insert(seq, id.clone());
                assert!(previous.is_none(), "run {run}: sequence number {seq} acknowledged twice");
            }
        }
        check_journal(&path, &acknowledged, &claims, run);
    }
    eprintln!("journal crash test: {kills} kills, {total_acks} acknowledged appends, {} records", acknowledged.len());
    assert!(total_acks as u64 > kills, "the children made progress between kills");
}

/// Starts a child on the journal, kills it with SIGKILL after `acks_before_kill` acks, and
/// returns every complete ack line it printed.
fn run_and_kill(path: &std::path::Path, run: u64, acks_before_kill: usize) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_journal-crash-child"))
        .arg(path)
        .arg(run.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the crash child");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::sync_channel::<String>(1024);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let deadline = Instant::now() + WAIT_MAX;
    while acks.len() < acks_before_kill {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => acks.extend(parse_ack(&line)),
            Err(error) => panic!("run {run}: child stopped making progress: {error}"),
        }
    }
    child.kill().expect("SIGKILL the child");
    child.wait().unwrap();
    // Everything the child printed before dying was acknowledged; collect the rest of it. A
    // line cut by the kill has no END and is ignored.
    for line in lines_rx.iter() {
        acks.extend(parse_ack(&line));
    }
    reader.join().unwrap();
    acks
}

fn check_journal(path: &std::path::Path, acknowledged: &BTreeMap<u64, String>, claims: &[(String, u64)], run: u64) {
    let journal = Journal::open(path, Config::default()).unwrap_or_else(|e| panic!("run {run}: reopen failed: {e}"));
    let count = journal.verify().unwrap_or_else(|e| panic!("run {run}: chain broken: {e}"));
    let mut seen = BTreeSet::new();
    let mut next = 1;
    while next <= count {
        for record in journal.read_range(next, 4096).unwrap() {
            let id = integration_tests::crash_payload_id(&record.payload)
                .unwrap_or_else(|| panic!("run {run}: record {} is not a whole payload", record.seq));
            assert!(seen.insert(id.to_owned()), "run {run}: {id} is in the journal twice");
            if let Some(expected) = acknowledged.get(&record.seq) {
                assert_eq!(id, expected, "run {run}: record {} holds the wrong payload", record.seq);
            }
            next = record.seq + 1;
        }
    }
    if let Some((&highest, _)) = acknowledged.last_key_value() {
        assert!(count >= highest, "run {run}: acknowledged record {highest} lost; the journal ends at {count}");
    }
    for (id, seq) in claims {
        let key = id.replace("-t0", "");
        let entry = journal.idempotency("crash", &key).unwrap();
        assert!(entry.is_some(), "run {run}: claim {key} (record {seq}) lost");
    }
}
