//! Property tests: no starvation (within the stated bound), rate limits never exceeded over
//! any window, no payment lost or duplicated, FIFO on equal class and deadline.

use std::collections::{BTreeMap, BTreeSet};

use model::{MerchantId, PaymentId, Timestamp};
use proptest::prelude::*;
use queue::*;

use crate::{at, item, name, open_config};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

const CLASS_NAMES: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];

fn weighted_config(weights: &[u32]) -> QueueConfig {
    let mut config = open_config();
    config.classes = weights
        .iter()
        .zip(CLASS_NAMES)
        .map(|(w, n)| ClassConfig { name: name(n), weight: *w, deadline_default_ms: 1000, age_max_ms: None })
        .collect();
    config
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// While every class is backlogged, between two services of class i (and before its first)
    /// at most Σ_{j≠i} (⌈w_j / w_i⌉ + 1) payments of other classes are served.
    #[test]
    fn no_class_starves(weights in prop::collection::vec(1u32..=20, 2..=6), chunks in prop::collection::vec(1usize..12, 40..80)) {
        let mut queue = Queue::new(weighted_config(&weights)).unwrap();
        let per_class = 1000u128;
        let batch: Vec<Enqueue> = (0..weights.len() as u128 * per_class)
            .map(|i| item(i, (i % 7) as u64, CLASS_NAMES[(i % weights.len() as u128) as usize], "base", None))
            .collect();
        queue.enqueue(&batch, at(0)).unwrap();
        let mut order: Vec<usize> = Vec::new();
        for (t, n) in chunks.iter().enumerate() {
            let out = queue.dequeue(name("base"), *n, at(t as u64), |_| true);
            order.extend(out.payments.iter().map(|p| CLASS_NAMES.iter().position(|c| name(c) == p.class).unwrap()));
        }
        prop_assert!(order.len() < per_class as usize, "every class stayed backlogged");
        for (i, wi) in weights.iter().enumerate() {
            let bound: u32 = weights.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, wj)| wj.div_ceil(*wi) + 1).sum();
            let mut others = 0u32;
            for class in &order {
                if *class == i {
                    others = 0;
                } else {
                    others += 1;
                    prop_assert!(others <= bound, "class {i} (weight {wi}) waited {others} > {bound}; weights {weights:?}");
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Enqueue { count: u8, merchant: u64, class: u8, rail: u8, deadline: Option<u8>, reuse: bool },
    Dequeue { rail: u8, n: u8, odd_only: bool },
    Remove { pick: u8 },
    Drain { from: u8, to: Option<u8>, dry_run: bool },
    Wait { ms: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..6, 0u64..4, 0u8..4, 0u8..3, prop::option::of(0u8..4), prop::bool::weighted(0.1))
            .prop_map(|(count, merchant, class, rail, deadline, reuse)| Op::Enqueue { count, merchant, class, rail, deadline, reuse }),
        3 => (0u8..3, 1u8..8, any::<bool>()).prop_map(|(rail, n, odd_only)| Op::Dequeue { rail, n, odd_only }),
        1 => any::<u8>().prop_map(|pick| Op::Remove { pick }),
        1 => (0u8..3, prop::option::of(0u8..3), any::<bool>()).prop_map(|(from, to, dry_run)| Op::Drain { from, to, dry_run }),
        2 => (0u16..400).prop_map(|ms| Op::Wait { ms }),
    ]
}

const RAILS: [&str; 3] = ["base", "optimism", "arbitrum"];
const CLASSES: [&str; 4] = ["urgent", "payroll", "standard", "bulk"];

struct Run {
    served: BTreeMap<PaymentId, (Timestamp, u8)>,
    merchant_times: BTreeMap<MerchantId, Vec<Timestamp>>,
    rail_times: BTreeMap<u8, Vec<Timestamp>>,
}

/// Runs `ops` against a queue and a plain model of it, checking after every step that the
/// queue holds exactly what the model says, that nothing is handed out twice, and that FIFO
/// holds (when `fifo` is set the predicate always accepts, so nothing is skipped).
fn run(ops: &[Op], merchant_limit: Limit, rail_limit: Limit, fifo: bool) -> Result<Run, TestCaseError> {
    let mut config = open_config();
    config.merchant_limit = merchant_limit;
    config.rail_limit = rail_limit;
    config.capacity = 60;
    config.capacity_per_merchant = 25;
    let mut queue = Queue::new(config).unwrap();
    let mut model: BTreeMap<PaymentId, QueuedPayment> = BTreeMap::new();
    let mut gone: BTreeSet<PaymentId> = BTreeSet::new();
    let mut out = Run { served: BTreeMap::new(), merchant_times: BTreeMap::new(), rail_times: BTreeMap::new() };
    let mut now = 0u64;
    let mut next_id = 1u128;
    for op in ops {
        match *op {
            Op::Wait { ms } => now += u64::from(ms),
            Op::Enqueue { count, merchant, class, rail, deadline, reuse } => {
                let mut batch: Vec<Enqueue> = (0..u128::from(count))
                    .map(|i| {
                        item(
                            next_id + i,
                            merchant,
                            CLASSES[class as usize],
                            RAILS[rail as usize],
                            deadline.map(u64::from),
                        )
                    })
                    .collect();
                // A payment id that is queued now must be refused; one that left the queue may come
                // back (a reissue re-queues the same payment).
                let reused = reuse && !model.is_empty();
                if let (true, Some(old)) = (reused, model.keys().next()) {
                    batch[0].id = *old;
                }
                let before = queue.snapshot();
                match queue.enqueue(&batch, at(now)) {
                    Ok(QueueOp::Enqueued { items, .. }) => {
                        prop_assert!(!reused, "a queued id was accepted again");
                        for p in items {
                            model.insert(p.id, p);
                        }
                        next_id += u128::from(count);
                    }
                    Ok(other) => prop_assert!(false, "enqueue returned {other:?}"),
                    Err(error) => {
                        prop_assert_eq!(queue.snapshot(), before, "refused enqueue changed the queue");
                        if !matches!(error, QueueError::Full { .. } | QueueError::MerchantFull { .. }) {
                            prop_assert!(reused, "unexpected refusal {error}");
                        }
                        if let Some(retry) = error.retry_after_ms() {
                            prop_assert!(retry >= 1000);
                        }
                    }
                }
            }
            Op::Dequeue { rail, n, odd_only } => {
                let odd = odd_only && !fifo;
                let got =
                    queue.dequeue(name(RAILS[rail as usize]), usize::from(n), at(now), |p| !odd || p.id.0 % 2 == 1);
                prop_assert!(got.payments.len() <= usize::from(n));
                for p in &got.payments {
                    let queued = model.remove(&p.id);
                    prop_assert_eq!(
                        queued.map(|q| q.rail),
                        Some(name(RAILS[rail as usize])),
                        "served a payment not queued on this rail"
                    );
                    prop_assert!(out.served.insert(p.id, (at(now), rail)).is_none(), "served twice");
                    prop_assert!(!odd || p.id.0 % 2 == 1, "served a payment the predicate refused");
                    gone.insert(p.id);
                    out.merchant_times.entry(p.merchant).or_default().push(at(now));
                    out.rail_times.entry(rail).or_default().push(at(now));
                    if fifo {
                        let earlier = model.values().find(|q| {
                            q.rail == p.rail
                                && q.class == p.class
                                && q.merchant == p.merchant
                                && q.deadline == p.deadline
                                && q.seq < p.seq
                        });
                        prop_assert!(earlier.is_none(), "served {:?} before the earlier {:?}", p, earlier);
                    }
                }
            }
            Op::Remove { pick } => {
                let Some(id) = model.keys().nth(usize::from(pick) % model.len().max(1)).copied() else { continue };
                let (removed, _) = queue.remove(&[id, PaymentId(u128::MAX)]);
                prop_assert_eq!(removed.len(), 1);
                model.remove(&id);
                gone.insert(id);
            }
            Op::Drain { from, to, dry_run } => {
                let from_rail = name(RAILS[from as usize]);
                let target = to.map(|t| name(RAILS[t as usize]));
                let report = queue.drain(from_rail, at(now), dry_run, |_| target);
                let expected: usize = model.values().filter(|p| p.rail == from_rail).count();
                prop_assert_eq!(report.moves.len() + report.unmovable.len(), expected);
                if !dry_run {
                    for m in &report.moves {
                        model.get_mut(&m.payment).unwrap().rail = m.to;
                    }
                }
            }
        }
        prop_assert_eq!(queue.len(), model.len());
        for (id, p) in &model {
            prop_assert_eq!(queue.get(*id).map(|q| q.rail), Some(p.rail));
        }
    }
    Ok(out)
}

/// GCRA conformance: `count` services within `span_ns` need `(count - burst) * T <= span`.
fn within_limit(times: &[Timestamp], limit: Limit) -> Result<(), String> {
    let period_ns = 1_000_000_000u64 / u64::from(limit.per_second);
    for i in 0..times.len() {
        for j in i..times.len() {
            let count = (j - i + 1) as u64;
            let span_ns = (times[j].0 - times[i].0) * 1_000_000;
            if count > u64::from(limit.burst) && (count - u64::from(limit.burst)) * period_ns > span_ns {
                return Err(format!("{count} services in {} ms exceed {limit:?}", span_ns / 1_000_000));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn limits_are_never_exceeded_over_any_window(
        ops in prop::collection::vec(op(), 1..120),
        merchant in (1u32..20, 1u32..5),
        rail in (1u32..40, 1u32..8),
    ) {
        let merchant_limit = Limit { per_second: merchant.0, burst: merchant.1 };
        let rail_limit = Limit { per_second: rail.0, burst: rail.1 };
        let run = run(&ops, merchant_limit, rail_limit, false)?;
        for times in run.merchant_times.values() {
            prop_assert!(within_limit(times, merchant_limit).is_ok(), "{:?}", within_limit(times, merchant_limit));
        }
        for times in run.rail_times.values() {
            prop_assert!(within_limit(times, rail_limit).is_ok(), "{:?}", within_limit(times, rail_limit));
        }
    }

    #[test]
    fn no_payment_is_lost_or_duplicated(ops in prop::collection::vec(op(), 1..150)) {
        run(&ops, Limit { per_second: 3, burst: 2 }, Limit { per_second: 10, burst: 3 }, false)?;
    }

    #[test]
    fn fifo_on_equal_class_and_deadline(ops in prop::collection::vec(op(), 1..150)) {
        run(&ops, Limit { per_second: 5, burst: 2 }, Limit { per_second: 1000, burst: 1000 }, true)?;
    }
}
