//! Finished work leaves memory for the history store, written in the same commit; it stays
//! queryable by payment, batch, merchant reference and settlement, across restarts; snapshots
//! bound what a restart replays; reconciliation runs over the history in bounded windows.

use std::collections::BTreeSet;

use engine::*;
use model::*;

use super::{BLOCK_MS, T0, World, config, fund, run_until_done, submit_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_payments_leave_memory_and_stay_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let world = World::new();
    let mut cfg = config();
    cfg.snapshot_every_bytes = 16 << 10;
    let mut engine = super::open_engine(&path, cfg.clone(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let intakes = submit_all(&mut engine, 2_000, T0).await;
    let now = run_until_done(&mut engine, &world, T0, 1_000).await;
    engine.tick(now.saturating_add_ms(BLOCK_MS)).await.unwrap();
    super::check_paid_exactly_once(&engine, &world, 2_000);

    let state = engine.state();
    assert!(state.book.payments.is_empty(), "settled payments left memory");
    assert!(state.book.settlements.is_empty() && state.book.batches.is_empty());
    assert_eq!(state.pools.open_reservations(), 0);
    assert_eq!(state.pools.ledger().transfer_count(), 6, "only the six funding transfers are kept");

    let check = |engine: &Engine| {
        let mut settlements = BTreeSet::new();
        for (n, intake) in intakes.iter().enumerate() {
            let Intake::Accepted { batch, payments } = intake else { panic!("accepted") };
            let record = engine.batch(*batch).unwrap().expect("the batch is in the history store");
            assert_eq!(&record.payments, payments);
            for (i, id) in payments.iter().enumerate() {
                let payment = engine.payment(*id).unwrap().expect("the payment is in the history store");
                assert_eq!(payment.state, PaymentState::Settled);
                let reference = format!("inv-{}", n * 500 + i);
                assert_eq!(payment.payment.reference, reference);
                assert_eq!(engine.payments_by_reference(payment.payment.merchant, &reference).unwrap(), vec![*id]);
                settlements.insert(payment.settlement.expect("settled through a settlement"));
            }
        }
        for id in settlements {
            let record = engine.settlement(id).unwrap().expect("the settlement is in the history store");
            assert_eq!(record.state, SettlementState::Final);
        }
        assert!(engine.payment(PaymentId(12345)).unwrap().is_none());
        assert!(engine.payments_by_reference(MerchantId(1), "no-such-reference").unwrap().is_empty());
    };
    check(&engine);
    let hash = engine.state().state_hash();
    let tip = engine.journal().tip();
    drop(engine);

    let engine = super::open_engine(&path, cfg, world.rails(), now).await.unwrap();
    assert_eq!(engine.state().state_hash(), hash, "snapshot plus tail gives the same state");
    let snapshot = engine.journal().latest_snapshot().unwrap().expect("snapshots were written");
    // A restart replays at most one interval and the commit that crossed it (a batch of
    // 500 payments is the largest here, about 60 KiB).
    let bytes = |from: u64| -> usize {
        engine.journal().read_range(from, 1_000_000).unwrap().iter().map(|r| r.payload.len()).sum()
    };
    let (tail, all) = (bytes(snapshot.seq + 1), bytes(1));
    assert!(
        tail < (16 << 10) + (96 << 10),
        "a restart replays at most about one interval: {tail} of {all} bytes ({tip} records)"
    );
    assert!(all > 3 * ((16 << 10) + (96 << 10)), "the journal is much longer than the bound: {all} bytes");
    check(&engine);
    // The same batches again are recognised from the history store.
    let mut engine = engine;
    let again = submit_all(&mut engine, 2_000, now).await;
    for (before, after) in intakes.iter().zip(&again) {
        let (Intake::Accepted { batch, payments }, Intake::Duplicate { batch: b, payments: p }) = (before, after)
        else {
            panic!("expected a duplicate, got {after:?}");
        };
        assert_eq!((batch, payments), (b, p));
    }
}

/// A run checks at most `reconcile_settlements_max` settlements; successive runs roll over
/// the whole history, so a reorg past finality is found wherever it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_bounded_per_run_and_rolls_over_history() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut cfg = config();
    cfg.reconcile_settlements_max = 4;
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    submit_all(&mut engine, 1_000, T0).await;
    let now = run_until_done(&mut engine, &world, T0, 1_000).await;
    let settlements = engine.journal().history_scan(b"s", None, usize::MAX).unwrap().len();
    assert!(settlements > 8, "{settlements} settlements");
    let mut checked = 0;
    let mut runs = 0;
    while checked < 2 * settlements {
        let report = engine.reconcile(now).await.unwrap();
        assert!(report.settlements_checked <= 4, "{report:?}");
        assert!(report.differences.is_empty(), "{:?}", report.differences);
        checked += report.settlements_checked;
        runs += 1;
    }
    assert!(runs >= settlements / 2);
    world.sandboxes[0].inject(rails::sandbox::Fault::Reorg { depth: 50 });
    let mut found = false;
    for _ in 0..settlements {
        let report = engine.reconcile(now).await.unwrap();
        if report.differences.iter().any(|d| matches!(d, Difference::FinalNotOnChain { .. })) {
            found = true;
            break;
        }
    }
    assert!(found, "the rolling window reaches the reorged settlements");
}

/// Destination totals (a random-key write per leg) are kept only when the balance check is on;
/// with it off, reconciliation still checks every settlement's own transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_totals_are_written_only_for_the_balance_check() {
    for balances in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let world = World::new();
        let mut cfg = config();
        cfg.reconcile_balances = balances;
        let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, world.rails(), T0).await.unwrap();
        fund(&mut engine, T0).await;
        submit_all(&mut engine, 500, T0).await;
        let now = run_until_done(&mut engine, &world, T0, 500).await;
        let totals = engine.journal().history_scan(b"d", None, 1_000).unwrap();
        assert_eq!(totals.len(), if balances { 500 } else { 0 }, "balances {balances}");
        let report = engine.reconcile(now).await.unwrap();
        assert!(report.differences.is_empty(), "{:?}", report.differences);
        assert!(report.settlements_checked > 0 && report.clean.len() == report.settlements_checked);
        assert_eq!(report.destinations_checked, if balances { 500 } else { 0 });
    }
}

/// Finished payments are written in groups, one per batch and commit: a payment is found among
/// its batch's groups however its batch's payments finished (some cancelled one by one, the
/// rest settled over several rounds and rails), and listing pages through them in id order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_finished_in_different_commits_are_found_and_listed_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let intakes = submit_all(&mut engine, 1_500, T0).await;
    let ids: Vec<PaymentId> = intakes
        .iter()
        .flat_map(|intake| match intake {
            Intake::Accepted { payments, .. } => payments.clone(),
            other => panic!("accepted, got {other:?}"),
        })
        .collect();
    // Every seventh payment is cancelled while queued: a commit (and a group) of its own.
    let cancelled: BTreeSet<PaymentId> = ids.iter().step_by(7).copied().collect();
    for id in &cancelled {
        let merchant = engine.payment(*id).unwrap().unwrap().payment.merchant;
        engine.cancel(merchant, *id, "test", T0).await.unwrap();
    }
    let now = run_until_done(&mut engine, &world, T0, 1_000).await;
    engine.tick(now.saturating_add_ms(BLOCK_MS)).await.unwrap();
    assert!(engine.state().book.payments.is_empty(), "every payment finished");

    let groups = engine.journal().history_scan(b"p", None, usize::MAX).unwrap().len();
    assert!(groups > cancelled.len(), "the settled payments were written in groups too: {groups}");
    assert!(groups < cancelled.len() + 100, "far fewer entries than payments: {groups} for {}", ids.len());

    // Each payment by id, one by one and (through the service's handle) all at once.
    let (handle, _inbox) = engine::service::unattached(8, engine.journal().clone());
    for id in &ids {
        let record = engine.payment(*id).unwrap().expect("found in its batch's groups");
        let expected = if cancelled.contains(id) { PaymentState::Failed } else { PaymentState::Settled };
        assert_eq!((record.payment.id, record.state), (*id, expected));
        assert_eq!(handle.payment(*id).unwrap().map(|r| r.state), Some(expected));
    }
    let unknown = PaymentId(ids[0].0 | 0xffff);
    assert!(engine.payment(unknown).unwrap().is_none(), "a row past the batch is no payment");

    // Listing: pages of 7 give every payment once, in id order, across groups and batches.
    let everything = |keep: &dyn Fn(&PaymentRecord) -> bool, limit: usize, scan: usize| {
        let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let (found, next) = handle.finished_payments(cursor, limit, scan, keep).unwrap();
            assert!(found.len() <= limit);
            seen.extend(found.iter().map(|r| r.payment.id));
            pages += 1;
            assert!(pages < 10_000, "listing makes progress");
            match next {
                Some(next) => cursor = Some(next),
                None => return seen,
            }
        }
    };
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(everything(&|_| true, 7, 20_000), sorted);
    // Only the failed ones, with a scan budget smaller than a batch: still all, in order.
    let failed = everything(&|r| r.state == PaymentState::Failed, 100, 50);
    assert_eq!(failed, cancelled.iter().copied().collect::<Vec<_>>());
}
