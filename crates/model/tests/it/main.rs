//! Book scenarios: events applied in order, with the state every payment ends in, and events
//! that must be refused without changing anything.

use std::collections::BTreeMap;

use model::*;

const T: Timestamp = Timestamp(1_700_000_000_000);

fn payment(id: u128, amount: u128) -> Payment {
    Payment {
        id: PaymentId(id),
        batch: BatchId(1),
        merchant: MerchantId(7),
        reference: format!("inv-{id}"),
        amount: Amount::new(amount),
        asset: Asset::USDC,
        destination: Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Network::BASE).unwrap(),
        networks: vec![Network::BASE, Network::ETHEREUM],
        class: Name::new("standard").unwrap(),
        deadline: None,
        metadata: BTreeMap::new(),
    }
}

fn accepted(ids: &[u128]) -> Event {
    Event::BatchAccepted {
        batch: BatchId(1),
        merchant: MerchantId(7),
        idempotency_key: "k1".into(),
        body_hash: [0; 32],
        count: u32::try_from(ids.len()).unwrap(),
        payments: ids.iter().map(|id| payment(*id, 100 * id)).collect(),
        at: T,
    }
}

fn settlement(id: u128, payments: &[u128]) -> Settlement {
    Settlement {
        id: SettlementId(id),
        rail: Name::new("base").unwrap(),
        network: Network::BASE,
        asset: Asset::USDC,
        legs: payments
            .iter()
            .map(|p| Leg {
                payment: PaymentId(*p),
                destination: payment(*p, 0).destination,
                amount: Amount::new(100 * p),
            })
            .collect(),
        fee_asset: Asset::ETH,
        fee_reserved: Amount::new(10),
    }
}

fn tx(txid: u8, nonce: u64) -> SignedTx {
    SignedTx {
        txid: [txid; 32],
        raw: vec![txid; 8],
        spend: Spend::Nonce { sender: [1; 20], nonce },
        fee: Amount::new(5),
    }
}

fn queued(id: u128) -> Event {
    Event::PaymentsQueued { payments: vec![PaymentId(id)], at: T }
}

fn run(events: &[Event]) -> Book {
    let mut book = Book::default();
    for (i, event) in events.iter().enumerate() {
        book.apply(event).unwrap_or_else(|e| panic!("event {i} {event:?}: {e}"));
    }
    book
}

/// A payment's state, in the book or among what it retired (finished payments leave it).
fn state(book: &Book, id: u128) -> PaymentState {
    match book.payment(PaymentId(id)) {
        Ok(record) => record.state,
        Err(_) => book.retired().payments.iter().find(|r| r.payment.id == PaymentId(id)).expect("known payment").state,
    }
}

/// Applies `event` expecting an error containing `reason`, and checks nothing changed.
fn refused(book: &mut Book, event: Event, reason: &str) {
    let before = book.clone();
    let error = book.apply(&event).expect_err("event must be refused").to_string();
    assert!(error.contains(reason), "{error}");
    assert_eq!(*book, before, "a refused event changed the book");
}

#[test]
fn happy_path_to_settled() {
    let book = run(&[
        accepted(&[1, 2]),
        queued(1),
        queued(2),
        Event::SettlementPlanned { settlement: settlement(10, &[1, 2]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 0), at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xa; 32], depth: 1, at: T },
        Event::SettlementReorged { settlement: SettlementId(10), at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xa; 32], depth: 1, at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xa; 32], depth: 12, at: T },
        Event::SettlementFinal { settlement: SettlementId(10), txid: [0xa; 32], fee_paid: Amount::new(4), at: T },
    ]);
    assert_eq!(state(&book, 1), PaymentState::Settled);
    assert_eq!(state(&book, 2), PaymentState::Settled);
    assert!(book.settlement(SettlementId(10)).is_err(), "a final settlement leaves the book");
    assert_eq!(book.retired().settlements[0].state, SettlementState::Final);
    assert!(book.payments.is_empty() && book.batches.is_empty(), "finished work leaves the book");
    assert_eq!(book.retired().batches.len(), 1);
}

#[test]
fn reissue_only_after_proof_of_death() {
    let mut book = run(&[
        accepted(&[1]),
        queued(1),
        Event::SettlementPlanned { settlement: settlement(10, &[1]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 0), at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
    ]);
    // Probably dead is not dead: no event can put a broadcast payment back in the queue.
    refused(&mut book, queued(1), "illegal payment transition from broadcast to queued");
    refused(&mut book, Event::SettlementPlanned { settlement: settlement(11, &[1]), at: T }, "illegal");
    refused(
        &mut book,
        Event::PaymentReissued { payment: PaymentId(1), previous: SettlementId(10), at: T },
        "from broadcast to reissued",
    );
    // A "conflict" that is our own transaction is a payment, not a death.
    refused(
        &mut book,
        Event::SettlementDead {
            settlement: SettlementId(10),
            proof: DeathProof::ConflictFinal { txid: [0xa; 32] },
            fee_burnt: Amount::ZERO,
            at: T,
        },
        "not one railyard signed",
    );
    for event in [
        Event::SettlementDead {
            settlement: SettlementId(10),
            proof: DeathProof::ConflictFinal { txid: [0xc; 32] },
            fee_burnt: Amount::ZERO,
            at: T,
        },
        Event::PaymentReissued { payment: PaymentId(1), previous: SettlementId(10), at: T },
        queued(1),
        Event::SettlementPlanned { settlement: settlement(11, &[1]), at: T },
    ] {
        book.apply(&event).unwrap();
    }
    let record = book.payment(PaymentId(1)).unwrap();
    assert_eq!((record.state, record.attempt, record.settlement), (PaymentState::Planned, 2, Some(SettlementId(11))));
}

#[test]
fn a_payment_is_never_in_two_live_settlements() {
    let mut book = run(&[
        accepted(&[1, 2]),
        queued(1),
        queued(2),
        Event::SettlementPlanned { settlement: settlement(10, &[1]), at: T },
    ]);
    refused(
        &mut book,
        Event::SettlementPlanned { settlement: settlement(11, &[2, 1]), at: T },
        "from planned to planned",
    );
    refused(&mut book, Event::SettlementPlanned { settlement: settlement(12, &[2, 2]), at: T }, "does not match");
    refused(&mut book, Event::SettlementPlanned { settlement: settlement(10, &[2]), at: T }, "already exists");
    let mut wrong_amount = settlement(13, &[2]);
    wrong_amount.legs[0].amount = Amount::new(1);
    refused(&mut book, Event::SettlementPlanned { settlement: wrong_amount, at: T }, "does not match");
    let mut wrong_network = settlement(14, &[2]);
    wrong_network.network = Network::ARBITRUM;
    refused(&mut book, Event::SettlementPlanned { settlement: wrong_network, at: T }, "does not match");
}

#[test]
fn replacements_must_spend_the_same_nonce() {
    let mut book = run(&[
        accepted(&[1]),
        queued(1),
        Event::SettlementPlanned { settlement: settlement(10, &[1]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 4), at: T },
    ]);
    refused(&mut book, Event::SettlementReplaced { settlement: SettlementId(10), tx: tx(0xb, 5), at: T }, "different");
    book.apply(&Event::SettlementReplaced { settlement: SettlementId(10), tx: tx(0xb, 4), at: T }).unwrap();
    book.apply(&Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xb; 32], at: T }).unwrap();
    refused(
        &mut book,
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xf; 32], depth: 1, at: T },
        "not one railyard signed",
    );
}

#[test]
fn held_in_flight_stays_held_until_the_chain_decides() {
    let mut book = run(&[
        accepted(&[1, 2]),
        queued(1),
        queued(2),
        Event::SettlementPlanned { settlement: settlement(10, &[1, 2]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 0), at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
        Event::PaymentHeld { payment: PaymentId(1), reason: "fee above cap".into(), at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xa; 32], depth: 3, at: T },
    ]);
    assert_eq!(state(&book, 1), PaymentState::Held { in_flight: true });
    assert_eq!(state(&book, 2), PaymentState::Confirmed);
    refused(&mut book, Event::PaymentFailed { payment: PaymentId(1), reason: "x".into(), at: T }, "illegal");
    refused(&mut book, queued(1), "illegal");
    book.apply(&Event::SettlementFinal {
        settlement: SettlementId(10),
        txid: [0xa; 32],
        fee_paid: Amount::new(1),
        at: T,
    })
    .unwrap();
    assert_eq!(state(&book, 1), PaymentState::Settled);
    assert_eq!(state(&book, 2), PaymentState::Settled);
}

#[test]
fn unknown_and_duplicate_ids_are_refused() {
    let mut book = run(&[accepted(&[1])]);
    refused(&mut book, accepted(&[2]), "batch 1 already exists");
    refused(&mut book, queued(9), "unknown payment 9");
    refused(&mut book, Event::SettlementReorged { settlement: SettlementId(5), at: T }, "unknown settlement 5");
    let in_batch = |ids: &[u128], n: u128| {
        let mut event = accepted(ids);
        if let Event::BatchAccepted { batch, payments, .. } = &mut event {
            *batch = BatchId(n);
            payments.iter_mut().for_each(|p| p.batch = BatchId(n));
        }
        event
    };
    refused(&mut book, in_batch(&[3, 3], 2), "payment 3 already exists");
    // Ids out of row order but distinct are a batch like any other.
    book.apply(&in_batch(&[7, 6], 3)).expect("distinct ids in any order are accepted");
    // One event queues many, each once, all or none.
    let mut book = run(&[accepted(&[1, 2])]);
    let ids = |ids: &[u128]| ids.iter().map(|i| PaymentId(*i)).collect::<Vec<_>>();
    refused(&mut book, Event::PaymentsQueued { payments: ids(&[1, 2, 1]), at: T }, "payment 1 already exists");
    refused(&mut book, Event::PaymentsQueued { payments: ids(&[1, 9]), at: T }, "unknown payment 9");
    book.apply(&Event::PaymentsQueued { payments: ids(&[2, 1]), at: T }).unwrap();
    assert_eq!((state(&book, 1), state(&book, 2)), (PaymentState::Queued, PaymentState::Queued));
    assert_eq!(book.count(PaymentState::Queued), 2);
    assert_eq!(book.count(PaymentState::Accepted), 0);
}

#[test]
fn payment_validation_table() {
    let ok = payment(1, 5);
    assert_eq!(ok.validate(), Ok(()));
    type Mutation = Box<dyn Fn(&mut Payment)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|p| p.amount = Amount::ZERO), "greater than zero"),
        (Box::new(|p| p.reference.clear()), "reference"),
        (Box::new(|p| p.reference = "x".repeat(129)), "reference"),
        (Box::new(|p| p.networks.clear()), "networks"),
        (Box::new(|p| p.networks.push(Network::BASE)), "listed twice"),
        (Box::new(|p| p.networks.push(Network::Bitcoin(BitcoinNetwork::Mainnet))), "different kind of network"),
        (Box::new(|p| drop(p.metadata.insert(String::new(), "v".into()))), "metadata"),
        (Box::new(|p| drop(p.metadata.insert("k".into(), "v".repeat(257)))), "metadata"),
    ];
    for (mutate, reason) in cases {
        let mut bad = ok.clone();
        mutate(&mut bad);
        let error = bad.validate().expect_err(reason).to_string();
        assert!(error.contains(reason), "{error}");
    }
}

#[test]
fn a_final_cancel_is_a_proof_of_death_never_a_payment() {
    let cancel = SignedTx {
        txid: [0xc; 32],
        raw: vec![],
        spend: Spend::Nonce { sender: [1; 20], nonce: 0 },
        fee: Amount::new(9),
    };
    let mut book = run(&[
        accepted(&[1]),
        queued(1),
        Event::SettlementPlanned { settlement: settlement(10, &[1]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 0), at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
        Event::SettlementCancelling { settlement: SettlementId(10), tx: cancel, at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xc; 32], depth: 1, at: T },
    ]);
    assert_eq!(state(&book, 1), PaymentState::Broadcast, "a confirmed cancel paid nobody: still in flight");
    refused(
        &mut book,
        Event::SettlementFinal { settlement: SettlementId(10), txid: [0xc; 32], fee_paid: Amount::new(1), at: T },
        "its cancel confirmed",
    );
    refused(
        &mut book,
        Event::SettlementDead {
            settlement: SettlementId(10),
            proof: DeathProof::CancelFinal { txid: [0xa; 32] },
            fee_burnt: Amount::ZERO,
            at: T,
        },
        "not one railyard signed",
    );
    refused(
        &mut book,
        Event::SettlementDead {
            settlement: SettlementId(10),
            proof: DeathProof::RevertedFinal { txid: [0xc; 32] },
            fee_burnt: Amount::ZERO,
            at: T,
        },
        "not one railyard signed",
    );
    book.apply(&Event::SettlementDead {
        settlement: SettlementId(10),
        proof: DeathProof::CancelFinal { txid: [0xc; 32] },
        fee_burnt: Amount::ZERO,
        at: T,
    })
    .unwrap();
    assert_eq!(state(&book, 1), PaymentState::RolledBack);
}

/// A batch larger than one journal record arrives as a header and continuations; the book
/// refuses continuations that overflow the count, name another batch, or repeat a payment.
#[test]
fn a_batch_spans_several_events_within_its_count() {
    let mut header = accepted(&[1]);
    if let Event::BatchAccepted { count, .. } = &mut header {
        *count = 3;
    }
    let more = |ids: &[u128]| Event::PaymentsAccepted {
        batch: BatchId(1),
        payments: ids.iter().map(|id| payment(*id, 100 * id)).collect(),
        at: T,
    };
    let mut book = run(&[header, more(&[2])]);
    refused(&mut book, more(&[2]), "payment 2 already exists");
    refused(&mut book, more(&[3, 4]), "more payments than the batch's count");
    let mut foreign = more(&[3]);
    if let Event::PaymentsAccepted { payments, .. } = &mut foreign {
        payments[0].merchant = MerchantId(8);
    }
    refused(&mut book, foreign, "another batch or merchant");
    refused(
        &mut book,
        Event::PaymentsAccepted { batch: BatchId(9), payments: vec![], at: T },
        "batch 9: unknown batch",
    );
    book.apply(&more(&[3])).unwrap();
    assert_eq!(book.batches[&BatchId(1)].payments, vec![PaymentId(1), PaymentId(2), PaymentId(3)]);
    assert_eq!(book.count(PaymentState::Accepted), 3);
}

/// The indexes follow every arrow: counts per state, and the open settlements.
#[test]
fn counts_and_open_settlements_follow_the_events() {
    let events = [
        accepted(&[1, 2]),
        queued(1),
        queued(2),
        Event::SettlementPlanned { settlement: settlement(10, &[1, 2]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 0), at: T },
        Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T },
        Event::SettlementConfirmed { settlement: SettlementId(10), txid: [0xa; 32], depth: 12, at: T },
        Event::SettlementFinal { settlement: SettlementId(10), txid: [0xa; 32], fee_paid: Amount::new(4), at: T },
    ];
    let mut book = Book::default();
    for event in &events {
        book.apply(event).unwrap();
        // The counts always equal a full count of the payments' states.
        let mut full = BTreeMap::new();
        for record in book.payments.values().chain(book.retired().payments.iter().map(|record| &**record)) {
            *full.entry(record.state).or_insert(0u64) += 1;
        }
        assert_eq!(*book.counts(), full, "after {event:?}");
        let open: Vec<SettlementId> = book
            .settlements
            .iter()
            .filter(|(_, r)| {
                !matches!(r.state, SettlementState::Released | SettlementState::Final | SettlementState::Dead)
            })
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(book.open_settlements().iter().copied().collect::<Vec<_>>(), open, "after {event:?}");
    }
    assert!(book.open_settlements().is_empty());
    assert!(book.is_quiet());
    assert_eq!(book.count(PaymentState::Settled), 2);
}

#[test]
fn a_child_must_spend_a_version_of_a_broadcast_settlement() {
    let inputs = |txid: u8| SignedTx {
        txid: [0xc0 | txid; 32],
        raw: vec![txid; 8],
        spend: Spend::Inputs(vec![([txid; 32], 1)]),
        fee: Amount::new(3),
    };
    let child = inputs(0xa); // spends output 1 of the version 0xa…
    let accelerated =
        |child: &SignedTx| Event::SettlementAccelerated { settlement: SettlementId(10), child: child.clone(), at: T };
    let mut book = run(&[
        accepted(&[1]),
        queued(1),
        Event::SettlementPlanned { settlement: settlement(10, &[1]), at: T },
        Event::SettlementSigned { settlement: SettlementId(10), tx: tx(0xa, 4), at: T },
    ]);
    // Signed but never sent: nothing to pull in yet.
    refused(&mut book, accelerated(&child), "accelerated");
    book.apply(&Event::SettlementBroadcast { settlement: SettlementId(10), txid: [0xa; 32], at: T }).unwrap();
    // A transaction spending none of its versions is no child of it; nor is a version itself.
    refused(&mut book, accelerated(&inputs(0xb)), "not one railyard signed");
    let version = SignedTx { spend: Spend::Inputs(vec![([0xa; 32], 0)]), ..tx(0xa, 4) };
    refused(&mut book, accelerated(&version), "not one railyard signed");
    book.apply(&accelerated(&child)).unwrap();
    let record = book.settlement(SettlementId(10)).unwrap();
    assert_eq!(record.children, vec![child.clone()]);
    assert_eq!(record.children_of(&[0xa; 32]), vec![child]);
    assert!(record.children_of(&[0xb; 32]).is_empty());
}
