//! Queue throughput with 1 M queued payments across 4 classes, 1,000 merchants and 4 rails,
//! rate limits on, against a plain `BinaryHeap` (no classes, no limits, no index) holding the
//! same number of items, in the same run. One iteration enqueues a batch of 100 and dequeues
//! 100, so the queue stays at 1 M; throughput counts both (200 operations).
//!
//! Run: `cargo bench -p benches --bench queue_throughput`. Also prints resident memory per
//! queued payment, measured around the fill.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use model::{MerchantId, Name, PaymentId, Timestamp};
use queue::{Enqueue, Limit, Queue, QueueConfig};

const QUEUED: u64 = 1_000_000;
const MERCHANTS: u64 = 1_000;
const BATCH: u64 = 100;
const GROUP: &str = "queue_1m";

struct Workload {
    classes: [Name; 4],
    rails: [Name; 4],
}

impl Workload {
    fn new() -> Workload {
        let names = |list: [&str; 4]| list.map(|n| Name::new(n).unwrap());
        Workload {
            classes: names(["urgent", "payroll", "standard", "bulk"]),
            rails: names(["base", "optimism", "arbitrum", "ethereum"]),
        }
    }

    fn item(&self, i: u64) -> Enqueue {
        Enqueue {
            id: PaymentId(u128::from(i)),
            merchant: MerchantId(i % MERCHANTS),
            class: self.classes[(i % 4) as usize],
            rail: self.rails[((i / 4) % 4) as usize],
            deadline: Some(Timestamp(i % 10_000)),
        }
    }
}

fn config() -> QueueConfig {
    let mut config = QueueConfig::example();
    config.capacity = 2_000_000;
    config.capacity_per_merchant = 10_000;
    config.merchant_limit = Limit { per_second: 1_000, burst: 1_000 };
    config.rail_limit = Limit { per_second: 1_000_000, burst: 100_000 };
    config
}

fn fill(work: &Workload) -> Queue {
    let mut queue = Queue::new(config()).unwrap();
    for start in (0..QUEUED).step_by(1000) {
        let batch: Vec<Enqueue> = (start..start + 1000).map(|i| work.item(i)).collect();
        queue.enqueue(&batch, Timestamp(0)).unwrap();
    }
    queue
}

fn bench(c: &mut Criterion) {
    let work = Workload::new();
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(2 * BATCH));

    let mut queue = fill(&work);
    let mut next = QUEUED;
    let mut now = 1u64;
    let mut turn = 0usize;
    group.bench_function("railyard", |b| {
        b.iter(|| {
            let batch: Vec<Enqueue> = (next..next + BATCH).map(|i| work.item(i)).collect();
            next += BATCH;
            queue.enqueue(&batch, Timestamp(now)).unwrap();
            let out = queue.dequeue(work.rails[turn % 4], BATCH as usize, Timestamp(now), |_| true);
            assert!(!out.payments.is_empty());
            turn += 1;
            now += 1;
        })
    });
    drop(queue);

    let mut heap: BinaryHeap<Reverse<(u64, u64, u128)>> =
        (0..QUEUED).map(|i| Reverse((i % 10_000, i, u128::from(i)))).collect();
    let mut next = QUEUED;
    group.bench_function("binary_heap", |b| {
        b.iter(|| {
            for i in next..next + BATCH {
                heap.push(Reverse((i % 10_000, i, u128::from(i))));
            }
            next += BATCH;
            for _ in 0..BATCH {
                heap.pop().unwrap();
            }
        })
    });
    group.finish();
}

fn memory_per_payment(work: &Workload) -> Option<f64> {
    let before = benches::resident_bytes()?;
    let queue = fill(work);
    let after = benches::resident_bytes()?;
    let per = (after.saturating_sub(before)) as f64 / QUEUED as f64;
    drop(queue);
    Some(per)
}

fn main() {
    let out = benches::output_dir("queue_throughput");
    // Measured first, on a fresh heap, so that freed memory from the runs is not reused.
    let memory = memory_per_payment(&Workload::new());
    let mut criterion = Criterion::default()
        .output_directory(&out)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();

    println!(
        "\nqueue with {QUEUED} payments, 4 classes, {MERCHANTS} merchants, 4 rails, limits on; 1 op = 1 enqueue or 1 dequeue"
    );
    let (Some(ours), Some(heap)) =
        (benches::mean_ns(&out, GROUP, "railyard"), benches::mean_ns(&out, GROUP, "binary_heap"))
    else {
        println!("(not measured in this run)");
        return;
    };
    let rate = |ns: f64| (2 * BATCH) as f64 / (ns / 1e9);
    println!("{:>14} {:>14} {:>8}", "railyard op/s", "heap op/s", "ratio");
    println!("{:>14.0} {:>14.0} {:>7.1}%", rate(ours), rate(heap), 100.0 * heap / ours);
    match memory {
        Some(bytes) => println!("resident memory per queued payment: {bytes:.0} bytes"),
        None => println!("resident memory per queued payment: not measurable here"),
    }
}
