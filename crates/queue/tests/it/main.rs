//! Queue behaviour at its boundary: tables of operations with expected outcomes, and property
//! tests for fairness, limits, conservation of payments and FIFO.
// Test data is built from small counters; truncation cannot happen.
#![allow(clippy::cast_possible_truncation)]

mod properties;

use model::{MerchantId, Name, PaymentId, RailId, Timestamp};
use queue::*;

pub fn name(text: &str) -> Name {
    Name::new(text).unwrap()
}

pub fn at(ms: u64) -> Timestamp {
    Timestamp(1_000_000 + ms)
}

/// A config whose limits never bind, unless a test tightens them.
pub fn open_config() -> QueueConfig {
    let mut config = QueueConfig::example();
    config.merchant_limit = Limit { per_second: 1_000_000, burst: 1_000_000 };
    config.rail_limit = Limit { per_second: 1_000_000, burst: 1_000_000 };
    config
}

pub fn item(id: u128, merchant: u64, class: &str, rail: &str, deadline: Option<u64>) -> Enqueue {
    Enqueue {
        id: PaymentId(id),
        merchant: MerchantId(merchant),
        class: name(class),
        rail: name(rail),
        deadline: deadline.map(at),
    }
}

fn ids(payments: &[QueuedPayment]) -> Vec<u128> {
    payments.iter().map(|p| p.id.0).collect()
}

fn all(_: &QueuedPayment) -> bool {
    true
}

fn base() -> RailId {
    name("base")
}

#[test]
fn earliest_deadline_first_and_fifo_on_ties() {
    let mut queue = Queue::new(open_config()).unwrap();
    queue
        .enqueue(
            &[
                item(1, 1, "standard", "base", Some(500)),
                item(2, 1, "standard", "base", Some(100)),
                item(3, 2, "standard", "base", Some(500)),
                item(4, 3, "standard", "base", Some(100)),
                item(5, 1, "standard", "base", None), // default deadline: 4 h away
            ],
            at(0),
        )
        .unwrap();
    let out = queue.dequeue(base(), 10, at(1), all);
    assert_eq!(ids(&out.payments), [2, 4, 1, 3, 5]);
    assert_eq!(out.next_eligible, None);
    assert!(queue.is_empty());
}

#[test]
fn classes_share_by_weight_when_all_are_backlogged() {
    let mut queue = Queue::new(open_config()).unwrap();
    let classes = ["urgent", "payroll", "standard", "bulk"];
    let batch: Vec<Enqueue> = (0..400u128).map(|i| item(i, 1, classes[(i % 4) as usize], "base", None)).collect();
    queue.enqueue(&batch, at(0)).unwrap();
    let out = queue.dequeue(base(), 150, at(1), all);
    let count = |class: &str| out.payments.iter().filter(|p| p.class == name(class)).count();
    assert_eq!([count("urgent"), count("payroll"), count("standard"), count("bulk")], [80, 40, 20, 10]);
}

#[test]
fn an_idle_class_does_not_bank_credit() {
    let mut queue = Queue::new(open_config()).unwrap();
    let urgent: Vec<Enqueue> = (0..100).map(|i| item(i, 1, "urgent", "base", None)).collect();
    queue.enqueue(&urgent, at(0)).unwrap();
    queue.dequeue(base(), 90, at(1), all);
    // bulk arrives late: it must not now be owed 90 services, only its weight's share
    let bulk: Vec<Enqueue> = (100..200).map(|i| item(i, 1, "bulk", "base", None)).collect();
    queue.enqueue(&bulk, at(2)).unwrap();
    let out = queue.dequeue(base(), 9, at(3), all);
    let bulk_served = out.payments.iter().filter(|p| p.class == name("bulk")).count();
    assert!(bulk_served <= 2, "bulk served {bulk_served} of 9");
}

#[test]
fn bad_enqueues_are_refused_whole_and_change_nothing() {
    let mut config = open_config();
    config.capacity = 6;
    config.capacity_per_merchant = 3;
    config.merchant_limit = Limit { per_second: 2, burst: 2 };
    config.rail_limit = Limit { per_second: 4, burst: 4 };
    let mut queue = Queue::new(config).unwrap();
    queue.enqueue(&[item(1, 1, "bulk", "base", None), item(2, 2, "bulk", "base", None)], at(0)).unwrap();
    let before = queue.snapshot();
    let cases: Vec<(Vec<Enqueue>, QueueError)> = vec![
        (vec![], QueueError::Empty),
        (
            (10..14).map(|i| item(i, 3, "bulk", "base", None)).collect(),
            QueueError::MerchantFull { merchant: MerchantId(3), capacity: 3, retry_after_ms: 1000 },
        ),
        (
            vec![
                item(10, 1, "bulk", "base", None),
                item(11, 1, "bulk", "base", None),
                item(12, 1, "bulk", "base", None),
            ],
            QueueError::MerchantFull { merchant: MerchantId(1), capacity: 3, retry_after_ms: 1000 },
        ),
        (
            (10..15).map(|i| item(i, 3 + i as u64, "bulk", "base", None)).collect(),
            QueueError::Full { capacity: 6, retry_after_ms: 1000 },
        ),
        (
            vec![item(10, 3, "bulk", "base", None), item(1, 3, "bulk", "base", None)],
            QueueError::Duplicate(PaymentId(1)),
        ),
        (
            vec![item(10, 3, "bulk", "base", None), item(10, 4, "bulk", "base", None)],
            QueueError::Duplicate(PaymentId(10)),
        ),
        (vec![item(10, 3, "nope", "base", None)], QueueError::UnknownClass(name("nope"))),
    ];
    for (batch, expected) in cases {
        assert_eq!(queue.enqueue(&batch, at(1)), Err(expected.clone()), "{batch:?}");
        assert_eq!(queue.snapshot(), before, "refused {expected:?} changed the queue");
        assert_eq!(queue.len(), 2);
    }
    assert_eq!(QueueError::Full { capacity: 5, retry_after_ms: 1000 }.retry_after_ms(), Some(1000));
}

#[test]
fn merchant_rate_limit_holds_and_says_when_to_come_back() {
    let mut config = open_config();
    config.merchant_limit = Limit { per_second: 10, burst: 5 };
    let mut queue = Queue::new(config).unwrap();
    let batch: Vec<Enqueue> = (0..20).map(|i| item(i, 1, "standard", "base", None)).collect();
    queue.enqueue(&batch, at(0)).unwrap();
    queue.enqueue(&[item(100, 2, "standard", "base", None)], at(0)).unwrap();
    let first = queue.dequeue(base(), 100, at(0), all);
    // merchant 1's burst of 5, and merchant 2 is not held back by merchant 1's limit
    assert_eq!(ids(&first.payments), [0, 1, 2, 3, 4, 100]);
    assert_eq!(first.next_eligible, Some(at(100)), "one cell every 100 ms at 10/s");
    assert!(queue.dequeue(base(), 100, at(50), all).payments.is_empty());
    assert_eq!(ids(&queue.dequeue(base(), 100, at(100), all).payments), [5]);
    assert_eq!(ids(&queue.dequeue(base(), 100, at(350), all).payments), [6, 7]);
}

#[test]
fn rail_rate_limit_holds_and_charges_at_most_one_merchant_cell() {
    let mut config = open_config();
    config.rail_limit = Limit { per_second: 4, burst: 2 };
    let mut queue = Queue::new(config).unwrap();
    let batch: Vec<Enqueue> = (0..10).map(|i| item(i, i as u64, "standard", "base", None)).collect();
    queue.enqueue(&batch, at(0)).unwrap();
    let out = queue.dequeue(base(), 10, at(0), all);
    assert_eq!(ids(&out.payments), [0, 1]);
    assert_eq!(out.next_eligible, Some(at(250)));
    assert!(matches!(out.op, Some(QueueOp::Dequeued { charged: Some(MerchantId(2)), .. })));
    assert_eq!(ids(&queue.dequeue(base(), 10, at(250), all).payments), [2]);
}

#[test]
fn refused_by_the_predicate_stays_queued() {
    let mut queue = Queue::new(open_config()).unwrap();
    queue.enqueue(&(0..6).map(|i| item(i, 1, "standard", "base", None)).collect::<Vec<_>>(), at(0)).unwrap();
    let out = queue.dequeue(base(), 10, at(1), |p| p.id.0 % 2 == 0);
    assert_eq!(ids(&out.payments), [0, 2, 4]);
    assert_eq!(out.next_eligible, None);
    assert_eq!(queue.len(), 3);
    assert!(queue.dequeue(name("other"), 10, at(1), all).payments.is_empty());
}

#[test]
fn remove_and_drain() {
    let mut queue = Queue::new(open_config()).unwrap();
    let batch = [
        item(1, 1, "urgent", "base", Some(10)),
        item(2, 1, "urgent", "base", Some(20)),
        item(3, 2, "bulk", "base", None),
        item(4, 2, "bulk", "optimism", None),
    ];
    queue.enqueue(&batch, at(0)).unwrap();
    let (removed, op) = queue.remove(&[PaymentId(3), PaymentId(99), PaymentId(3)]);
    assert_eq!(ids(&removed), [3]);
    assert_eq!(op, Some(QueueOp::Removed { ids: vec![PaymentId(3)] }));
    assert_eq!(queue.remove(&[PaymentId(3)]), (vec![], None));

    queue.enqueue(&[item(5, 3, "standard", "base", None)], at(1)).unwrap();
    let retarget = |p: &QueuedPayment| (p.merchant != MerchantId(3)).then(|| name("arbitrum"));
    let before = queue.snapshot();
    let dry = queue.drain(base(), at(2), true, retarget);
    assert_eq!(dry.moves.iter().map(|m| m.payment.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(dry.unmovable, [PaymentId(5)]);
    assert_eq!((dry.op, queue.snapshot()), (None, before), "a dry run changes nothing");
    let real = queue.drain(base(), at(2), false, retarget);
    assert_eq!(real.moves, dry.moves);
    assert!(real.op.is_some());
    assert_eq!(ids(&queue.dequeue(name("arbitrum"), 10, at(3), all).payments), [1, 2], "order survives the move");
    assert_eq!(ids(&queue.dequeue(base(), 10, at(3), all).payments), [5]);
}

#[test]
fn stale_payments_and_depths() {
    let mut queue = Queue::new(open_config()).unwrap();
    queue.enqueue(&[item(1, 1, "urgent", "base", None), item(2, 2, "bulk", "base", None)], at(0)).unwrap();
    queue.enqueue(&[item(3, 1, "urgent", "optimism", None)], at(200_000)).unwrap();
    assert!(queue.stale(at(300_000)).is_empty(), "exactly at the limit is not stale");
    assert_eq!(ids(&queue.stale(at(300_001))), [1], "urgent's age_max is 5 min; bulk has none");
    let depths = queue.depths(at(400_000));
    assert_eq!(depths.classes[&name("urgent")], Depth { queued: 2, oldest_age_ms: 400_000 });
    assert_eq!(depths.merchants[&MerchantId(1)], Depth { queued: 2, oldest_age_ms: 400_000 });
    assert_eq!(depths.rails[&name("optimism")], Depth { queued: 1, oldest_age_ms: 200_000 });
}

#[test]
fn rebuilt_from_its_ops_the_queue_is_identical() {
    let mut config = open_config();
    config.merchant_limit = Limit { per_second: 5, burst: 3 };
    config.rail_limit = Limit { per_second: 20, burst: 10 };
    let mut live = Queue::new(config.clone()).unwrap();
    let mut journal: Vec<Vec<u8>> = Vec::new();
    let mut record = |op: Option<QueueOp>| {
        if let Some(op) = op {
            journal.push(postcard::to_stdvec(&op).unwrap());
        }
    };
    let classes = ["urgent", "payroll", "standard", "bulk"];
    let rails = ["base", "optimism"];
    for step in 0..60u64 {
        let batch: Vec<Enqueue> = (0..7u128)
            .map(|i| {
                let id = u128::from(step) * 100 + i;
                item(id, (id % 5) as u64, classes[(id % 4) as usize], rails[(id % 2) as usize], Some(step * 13 % 50))
            })
            .collect();
        record(live.enqueue(&batch, at(step * 40)).ok());
        record(live.dequeue(name(rails[(step % 2) as usize]), 6, at(step * 40 + 5), |p| p.id.0 % 7 != 0).op);
        if step % 9 == 0 {
            record(live.remove(&[PaymentId(u128::from(step) * 100 + 1)]).1);
        }
        if step % 13 == 0 {
            record(
                live.drain(name("optimism"), at(step * 40 + 7), false, |p| (p.id.0 % 3 == 0).then(|| name("base"))).op,
            );
        }
    }
    // Drop the live queue's memory of itself: rebuild from the journal alone.
    let mut rebuilt = Queue::new(config).unwrap();
    for bytes in &journal {
        rebuilt.apply(&postcard::from_bytes(bytes).unwrap());
    }
    assert!(!live.is_empty());
    assert_eq!(rebuilt.snapshot(), live.snapshot());
    assert_eq!(rebuilt.depths(at(10_000)), live.depths(at(10_000)));
    // Fairness and rate-limit state came back too: both make the same decisions from here.
    for t in [2_400, 2_401, 2_600, 3_000, 5_000] {
        for rail in rails {
            let (a, b) = (live.dequeue(name(rail), 4, at(t), all), rebuilt.dequeue(name(rail), 4, at(t), all));
            assert_eq!(a, b, "at {t} on {rail}");
        }
    }
}

#[test]
fn config_errors_name_the_key() {
    type Mutation = Box<dyn Fn(&mut QueueConfig)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|c| c.classes.clear()), "classes:"),
        (Box::new(|c| c.classes[1].weight = 0), "classes[1].weight"),
        (Box::new(|c| c.classes[2].weight = 1001), "classes[2].weight"),
        (Box::new(|c| c.classes[3].name = c.classes[0].name), "classes[3].name"),
        (Box::new(|c| c.classes[0].deadline_default_ms = 0), "classes[0].deadline_default_ms"),
        (Box::new(|c| c.classes[0].age_max_ms = Some(0)), "classes[0].age_max_ms"),
        (Box::new(|c| c.capacity = 0), "capacity:"),
        (Box::new(|c| c.capacity_per_merchant = c.capacity + 1), "capacity_per_merchant"),
        (Box::new(|c| c.scan_max = 0), "scan_max"),
        (Box::new(|c| c.rail_limit.burst = 0), "rail_limit:"),
        (
            Box::new(|c| _ = c.merchant_limits.insert(MerchantId(7), Limit { per_second: 0, burst: 1 })),
            "merchant_limits.7",
        ),
        (Box::new(|c| _ = c.rail_limits.insert(name("base"), Limit { per_second: 1, burst: 0 })), "rail_limits.base"),
    ];
    assert!(Queue::new(QueueConfig::example()).is_ok());
    for (mutate, key) in cases {
        let mut config = QueueConfig::example();
        mutate(&mut config);
        let error = Queue::new(config).unwrap_err().to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
}
