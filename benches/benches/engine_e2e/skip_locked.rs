//! The baseline of `engine_e2e` on PostgreSQL: what a user would otherwise build.

use std::time::{Duration, Instant};

use super::{BATCH, MERCHANTS};

/// What a user would otherwise build: payments in a table, merchants inserting batches of
/// `BATCH` (one durable transaction each), one worker claiming `BATCH` at a time with `FOR
/// UPDATE SKIP LOCKED` and marking them settled, the two running at once. Returns the time
/// the inserts took and the time until the last payment was settled.
pub(crate) fn skip_locked(url: &str, total: u64) -> (Duration, Duration) {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "DROP TABLE IF EXISTS payments;
             CREATE TABLE payments (id BIGINT PRIMARY KEY, merchant BIGINT NOT NULL, amount BIGINT NOT NULL,
                 destination TEXT NOT NULL, state SMALLINT NOT NULL DEFAULT 0);
             CREATE INDEX payments_waiting ON payments (id) WHERE state = 0;",
        )
        .unwrap();
    let started = Instant::now();
    // The worker sleeps until a batch is committed (as a worker woken by NOTIFY would), not
    // for a fixed while.
    let (inserted, wake) = std::sync::mpsc::channel::<()>();
    let producer = {
        let url = url.to_owned();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for b in 0..total / BATCH {
                let ids: Vec<i64> = (0..BATCH as i64).map(|i| (b * BATCH) as i64 + i).collect();
                let merchants: Vec<i64> = vec![(b % MERCHANTS) as i64 + 1; BATCH as usize];
                let amounts: Vec<i64> = ids.iter().map(|i| 1_000_000 + i % 1_000).collect();
                let destinations: Vec<String> = ids.iter().map(|i| format!("0x{i:040x}")).collect();
                client
                    .execute(
                        "INSERT INTO payments (id, merchant, amount, destination)
                         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])",
                        &[&ids, &merchants, &amounts, &destinations],
                    )
                    .unwrap();
                // The worker may have finished waiting already: nobody to tell then.
                inserted.send(()).ok();
            }
            started.elapsed()
        })
    };
    let mut settled = 0u64;
    while settled < total {
        let mut tx = client.transaction().unwrap();
        let claimed = tx
            .execute(
                "UPDATE payments SET state = 2 WHERE id IN (
                     SELECT id FROM payments WHERE state = 0 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)",
                &[&(BATCH as i64)],
            )
            .unwrap();
        tx.commit().unwrap();
        settled += claimed;
        if claimed == 0 {
            // Bounded: a batch committed between the claim and this wait was signalled already;
            // a timeout, or the producer done, means claim again.
            wake.recv_timeout(Duration::from_secs(1)).ok();
        }
    }
    (producer.join().unwrap(), started.elapsed())
}
