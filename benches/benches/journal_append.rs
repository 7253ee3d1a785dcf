//! Durable journal appends of 200-byte events at batch sizes 1, 10, 100 and 1000, against two
//! physical limits measured in the same run:
//! - `raw_append`: the same bytes appended to a plain file, one fdatasync per batch (the file
//!   grows on every batch, so each fdatasync also flushes the file's size);
//! - `raw_overwrite`: the same bytes written over a preallocated region, one fdatasync per batch
//!   (no metadata to flush: the closest to the device's own limit).
//!
//! Run: `cargo bench -p benches --bench journal_append`. It prints events/s for each and the
//! journal's share of each raw rate.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use journal::{Config, Journal};

const EVENT_BYTES: usize = 200;
const BATCHES: [usize; 4] = [1, 10, 100, 1000];
const GROUP: &str = "journal_append";

fn payloads(batch: usize) -> Vec<Vec<u8>> {
    (0..batch).map(|i| vec![u8::try_from(i % 251).unwrap(); EVENT_BYTES]).collect()
}

const RING_BYTES: u64 = 64 << 20;

/// A file whose blocks are written and flushed once, so that overwriting them later changes no
/// metadata.
fn preallocated(path: &std::path::Path) -> File {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..RING_BYTES / chunk.len() as u64 {
        file.write_all(&chunk).unwrap();
    }
    file.sync_all().unwrap();
    file
}

fn bench(c: &mut Criterion, dir: &std::path::Path) {
    let mut group = c.benchmark_group(GROUP);
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        let journal = Journal::open(dir.join(format!("journal-{batch}.redb")), Config::default()).unwrap();
        group.bench_function(BenchmarkId::new("railyard", batch), |b| {
            b.iter_batched(|| payloads(batch), |p| journal.append_batch(p).unwrap(), criterion::BatchSize::SmallInput)
        });
        drop(journal);
        let bytes: Vec<u8> = payloads(batch).concat();
        let mut file = File::create(dir.join(format!("raw-{batch}.log"))).unwrap();
        group.bench_function(BenchmarkId::new("raw_append", batch), |b| {
            b.iter(|| {
                file.write_all(&bytes).unwrap();
                file.sync_data().unwrap();
            })
        });
        let ring = preallocated(&dir.join(format!("ring-{batch}.log")));
        let slots = RING_BYTES / bytes.len() as u64;
        let mut slot = 0;
        group.bench_function(BenchmarkId::new("raw_overwrite", batch), |b| {
            b.iter(|| {
                ring.write_all_at(&bytes, slot * bytes.len() as u64).unwrap();
                ring.sync_data().unwrap();
                slot = (slot + 1) % slots;
            })
        });
    }
    group.finish();
}

fn main() {
    let out = benches::output_dir("journal_append");
    let data = tempfile::tempdir().unwrap();
    let mut criterion = Criterion::default()
        .output_directory(&out)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut criterion, data.path());
    criterion.final_summary();

    println!("\njournal append, {EVENT_BYTES}-byte events, durable (fdatasync / Durability::Immediate)");
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "batch", "railyard ev/s", "append ev/s", "overwrite ev/s", "vs append", "vs overwrite"
    );
    for batch in BATCHES {
        let mean = |name: &str| benches::mean_ns(&out, GROUP, &format!("{name}/{batch}"));
        let (Some(ours), Some(append), Some(overwrite)) = (mean("railyard"), mean("raw_append"), mean("raw_overwrite"))
        else {
            println!("{batch:>6} (not measured in this run)");
            continue;
        };
        let rate = |ns: f64| batch as f64 / (ns / 1e9);
        println!(
            "{batch:>6} {:>14.0} {:>14.0} {:>14.0} {:>11.1}% {:>11.1}%",
            rate(ours),
            rate(append),
            rate(overwrite),
            100.0 * append / ours,
            100.0 * overwrite / ours
        );
    }
}
