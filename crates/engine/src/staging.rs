//! Staging: where a waiting payment is between "Queued in the book" and "in a settlement".
//! One owner for one fact: a payment Queued in the book is in exactly one of three places —
//! not yet routed, in a rail's queue, or waiting in the batcher for company — and every move
//! between them, and out of them, goes through `Staging`, which keeps that true
//! (`Staging::check` verifies it).
//!
//! Staging is not journaled: after a restart it is rebuilt from the book (every Queued
//! payment is unrouted, then routed again). Routing is deterministic for the same book and
//! configuration; what does not survive a restart is the rate limiters' cells, so one burst
//! can pass right after a restart.

use std::collections::{BTreeMap, BTreeSet};

use model::*;
use queue::{DrainReport, Enqueue, Queue, QueuedPayment};
use router::{Batcher, Flush};

#[derive(Debug)]
pub(crate) struct Staging {
    unrouted: BTreeSet<PaymentId>,
    /// Unrouted payments no rail could take at their last routing, since when (not journaled:
    /// after a restart the clock starts again).
    unroutable: BTreeMap<PaymentId, Timestamp>,
    queue: Queue,
    batcher: Batcher,
}

impl Staging {
    pub(crate) fn new(queue: Queue, batcher: Batcher, book: &Book) -> Staging {
        let unrouted =
            book.payments.iter().filter(|(_, r)| r.state == PaymentState::Queued).map(|(id, _)| *id).collect();
        Staging { unrouted, unroutable: BTreeMap::new(), queue, batcher }
    }

    /// Payments that (re)entered Queued in the book wait to be routed. Their time without a
    /// rail starts again: a payment an operator retried right after it was held for having
    /// no rail was held again at once, before its rail's breaker could close (found by the
    /// simulator, seed 414).
    pub(crate) fn waiting(&mut self, payments: impl IntoIterator<Item = PaymentId>) {
        for payment in payments {
            self.unroutable.remove(&payment);
            self.unrouted.insert(payment);
        }
    }

    /// The unrouted payments still Queued in the book (any that left Queued drop out here).
    pub(crate) fn unrouted(&mut self, book: &Book) -> Vec<PaymentId> {
        let queued = |id: &PaymentId| book.payments.get(id).is_some_and(|r| r.state == PaymentState::Queued);
        self.unrouted.retain(queued);
        self.unroutable.retain(|id, _| queued(id));
        self.unrouted.iter().copied().collect()
    }

    /// Changes a class's parameters in the queue.
    pub(crate) fn set_class(&mut self, class: queue::ClassConfig) -> Result<(), queue::ConfigError> {
        self.queue.set_class(class)
    }

    /// Takes a payment out of staging wherever it is (a merchant cancelled it).
    pub(crate) fn forget(&mut self, payment: PaymentId) {
        self.unrouted.remove(&payment);
        self.unroutable.remove(&payment);
        self.queue.remove(&[payment]);
        self.batcher.remove(payment);
    }

    /// Notes that no rail could take `payment` now; returns since when that has been so.
    pub(crate) fn unroutable(&mut self, payment: PaymentId, now: Timestamp) -> Timestamp {
        *self.unroutable.entry(payment).or_insert(now)
    }

    /// Puts routed payments into their rail's queue; a full queue leaves them unrouted.
    pub(crate) fn enqueue(&mut self, batch: &[Enqueue], now: Timestamp) -> Result<(), queue::QueueError> {
        self.queue.enqueue(batch, now)?;
        for entry in batch {
            self.unrouted.remove(&entry.id);
            self.unroutable.remove(&entry.id);
        }
        Ok(())
    }

    /// Moves `rail`'s queued payments to the rail `retarget` picks (or leaves them); a dry run
    /// changes nothing. What waited in the batcher for that rail goes back to routing.
    pub(crate) fn drain(
        &mut self,
        rail: RailId,
        dry_run: bool,
        now: Timestamp,
        retarget: impl FnMut(&QueuedPayment) -> Option<RailId>,
    ) -> DrainReport {
        let report = self.queue.drain(rail, now, dry_run, retarget);
        if !dry_run {
            let waiting = self.batcher.take_rail(rail);
            self.unrouted.extend(waiting);
        }
        report
    }

    /// Takes what `rail` may carry now (rate limits permitting, at most `most`) from its queue
    /// into the batcher, and returns the batches that are due. `asset_of` gives a payment's
    /// asset, `None` if it is no longer Queued (then it is dropped from staging).
    pub(crate) fn dequeue_and_flush(
        &mut self,
        rail: &Capabilities,
        most: usize,
        now: Timestamp,
        asset_of: impl Fn(PaymentId) -> Option<Asset>,
    ) -> Vec<Flush> {
        let dequeued = self.queue.dequeue(rail.rail, most, now, |_| true);
        for item in &dequeued.payments {
            if let Some(asset) = asset_of(item.id) {
                self.batcher.add(rail.rail, asset, rail.batch_size_max, item.id, item.class, now);
            }
        }
        self.batcher.flush_rail(rail.rail, now)
    }

    /// Queued payments older than their class allows, taken out of the queue.
    pub(crate) fn take_stale(&mut self, now: Timestamp) -> Vec<QueuedPayment> {
        let stale = self.queue.stale(now);
        if !stale.is_empty() {
            let ids: Vec<PaymentId> = stale.iter().map(|p| p.id).collect();
            self.queue.remove(&ids);
        }
        stale
    }

    /// When the batcher next has a batch due.
    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.batcher.next_due()
    }

    pub(crate) fn depths(&self, now: Timestamp) -> queue::Depths {
        self.queue.depths(now)
    }

    /// (unrouted, queued, in the batcher).
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (self.unrouted.len(), self.queue.len(), self.batcher.waiting())
    }

    /// Checks the one-place rule against the book: every payment Queued in the book is in
    /// exactly one place, and nothing in the queue or the batcher is anything but Queued. (The
    /// unrouted set may hold payments that have since left Queued; routing drops them.)
    pub(crate) fn check(&self, book: &Book) -> Result<(), String> {
        let queued: BTreeSet<PaymentId> =
            self.queue.snapshot().into_iter().flat_map(|(_, _, items, _)| items).map(|p| p.id).collect();
        let batching: BTreeSet<PaymentId> = self.batcher.payments().collect();
        for (id, record) in &book.payments {
            if record.state != PaymentState::Queued {
                if queued.contains(id) || batching.contains(id) {
                    return Err(format!("payment {id} is {} but still staged", record.state));
                }
                continue;
            }
            let places = usize::from(self.unrouted.contains(id))
                + usize::from(queued.contains(id))
                + usize::from(batching.contains(id));
            if places != 1 {
                return Err(format!("queued payment {id} is in {places} staging places"));
            }
        }
        for id in queued.iter().chain(&batching) {
            if !book.payments.contains_key(id) {
                return Err(format!("staged payment {id} is not open in the book"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::*;
    use queue::{Enqueue, Queue, QueueConfig};
    use router::{BatchPolicy, Batcher};

    use super::Staging;

    const T: Timestamp = Timestamp(1_000);

    fn book() -> Book {
        let name = |s: &str| Name::new(s).unwrap();
        let payment = Payment {
            id: PaymentId(1),
            batch: BatchId(1),
            merchant: MerchantId(1),
            reference: "r".into(),
            amount: Amount::new(5),
            asset: Asset::USDC,
            destination: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Network::BASE).unwrap(),
            networks: vec![Network::BASE],
            class: name("standard"),
            deadline: None,
            metadata: BTreeMap::new(),
        };
        let mut book = Book::default();
        let events = [
            Event::BatchAccepted {
                batch: BatchId(1),
                merchant: MerchantId(1),
                idempotency_key: "k".into(),
                body_hash: [0; 32],
                count: 1,
                payments: vec![payment],
                at: T,
            },
            Event::PaymentsQueued { payments: vec![PaymentId(1)], at: T },
        ];
        for event in &events {
            book.apply(event).unwrap();
        }
        book
    }

    fn staging(book: &Book) -> Staging {
        let policy = BatchPolicy { windows_ms: BTreeMap::new(), window_default_ms: 1_000, immediate: vec![] };
        Staging::new(Queue::new(QueueConfig::example()).unwrap(), Batcher::new(policy), book)
    }

    #[test]
    fn the_check_finds_a_payment_in_no_place_or_in_two() {
        let book = book();
        let mut staging = staging(&book);
        assert_eq!(staging.check(&book), Ok(()), "rebuilt from the book: unrouted");
        let entry = Enqueue {
            id: PaymentId(1),
            merchant: MerchantId(1),
            class: Name::new("standard").unwrap(),
            rail: Name::new("base").unwrap(),
            deadline: None,
        };
        staging.enqueue(&[entry], T).unwrap();
        assert_eq!(staging.check(&book), Ok(()), "moved to the queue");
        staging.unrouted.insert(PaymentId(1));
        assert!(staging.check(&book).unwrap_err().contains("in 2 staging places"));
        staging.unrouted.clear();
        staging.take_stale(Timestamp(u64::MAX));
        assert!(staging.check(&book).unwrap_err().contains("in 0 staging places"));
    }
}
