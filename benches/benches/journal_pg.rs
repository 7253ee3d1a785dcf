//! The PostgreSQL journal's durable appends against the redb journal and against the table a
//! user would otherwise build, all on one machine in one run: a throwaway PostgreSQL cluster
//! (`scripts/pg-cluster`, fsync and synchronous commit on) and a redb file on the same disk.
//!
//! For appends of 1, 100 and 2,000 records of 200 bytes (an event, a merchant batch):
//! - `pg_table` (the baseline): one transaction per append inserting the records as rows of a
//!   plain table (`INSERT … SELECT FROM unnest($1, $2)`), nothing else;
//! - `journal_pg`: `PgJournal::append` (tip lock, hash-chained frame, tip update, notice);
//! - `journal_pg ×2`: two nodes appending at once, each its own connection;
//! - `journal_redb`: `Journal::append_batch` on redb (group commit, `Durability::Immediate`).
//!
//! Run: `cargo bench -p benches --bench journal_pg` (RAILYARD_BENCH_SECONDS per figure, default 3).
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use journal_pg::cluster::Cluster;
use journal_pg::{PgAppend, PgJournal};

const RECORD_BYTES: usize = 200;

fn records(count: usize, tag: usize) -> Vec<Vec<u8>> {
    (0..count).map(|i| vec![u8::try_from((i + tag) % 251).unwrap(); RECORD_BYTES]).collect()
}

/// Records per second of `append` called for `seconds`, each call appending `batch` records.
fn rate(seconds: u64, batch: usize, mut append: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        append(calls);
        calls += 1;
    }
    (calls * batch) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let seconds: u64 = std::env::var("RAILYARD_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let cluster = Cluster::start();
    let url = cluster.url.as_str();
    let redb_dir = tempfile::tempdir().unwrap();

    println!("durable appends of 200-byte records, records/s ({seconds} s a figure), ratio to the plain table:");
    for batch in [1, 100, 2_000] {
        let mut table = postgres::Client::connect(url, postgres::NoTls).unwrap();
        table
            .batch_execute(
                "DROP TABLE IF EXISTS payments; CREATE TABLE payments (id BIGINT PRIMARY KEY, body BYTEA NOT NULL)",
            )
            .unwrap();
        let insert =
            table.prepare("INSERT INTO payments (id, body) SELECT * FROM unnest($1::bigint[], $2::bytea[])").unwrap();
        let mut next_id = 0i64;
        let baseline = rate(seconds, batch, |call| {
            let ids: Vec<i64> = (0..batch)
                .map(|_| {
                    next_id += 1;
                    next_id
                })
                .collect();
            let bodies = records(batch, call);
            let mut tx = table.transaction().unwrap();
            tx.execute(&insert, &[&ids, &bodies]).unwrap();
            tx.commit().unwrap();
        });

        let journal = PgJournal::connect(url).unwrap();
        let pg = rate(seconds, batch, |call| {
            journal.append(&PgAppend { payloads: records(batch, call), ..PgAppend::default() }).unwrap();
        });

        let nodes = [Arc::new(PgJournal::connect(url).unwrap()), Arc::new(PgJournal::connect(url).unwrap())];
        let threads: Vec<_> = nodes
            .iter()
            .map(|node| {
                let node = Arc::clone(node);
                std::thread::spawn(move || {
                    rate(seconds, batch, |call| {
                        node.append(&PgAppend { payloads: records(batch, call), ..PgAppend::default() }).unwrap();
                    })
                })
            })
            .collect();
        let two: f64 = threads.into_iter().map(|t| t.join().unwrap()).sum();

        let redb = journal::Journal::open(redb_dir.path().join(format!("j-{batch}.redb")), journal::Config::default())
            .unwrap();
        let local = rate(seconds, batch, |call| {
            redb.append_batch(records(batch, call)).unwrap();
        });
        println!(
            "  batch {batch:>5}: pg_table {baseline:>9.0} | journal_pg {pg:>9.0} ({:.2}×) | journal_pg ×2 nodes {two:>9.0} ({:.2}×) | journal_redb {local:>9.0} ({:.2}×)",
            pg / baseline,
            two / baseline,
            local / baseline,
        );
    }
    drop(cluster);
}
