//! The engine as a service: one task owns it, commands come through a bounded channel, a full
//! channel answers busy, queries read the published read model and the history store and never
//! wait for a round.

use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::service::{self, ServiceConfig, ServiceError};
use engine::*;
use model::*;

use super::faults::counting;
use super::{BLOCK_MS, T0, World, config, drafts, fund, name};

/// Real time, sped up: a round every 20 ms stands for a block of the sandbox chains
/// (1 s), so the service's clock runs 50 times faster than the wall clock. (tokio's paused
/// clock does not fit: it jumps ahead whenever the engine waits for the journal's thread.)
const SPEED: u64 = 50;

/// The service's configuration on the sped-up clock, and that clock.
pub(crate) fn service_config(world: &World) -> (ServiceConfig, impl Fn() -> Timestamp + Copy) {
    let start = std::time::Instant::now();
    let now = move || T0.saturating_add_ms(u64::try_from(start.elapsed().as_millis()).unwrap() * SPEED);
    let sandboxes = world.sandboxes.clone();
    let config = ServiceConfig {
        tick: Duration::from_millis(BLOCK_MS / SPEED),
        now: Box::new(now),
        before_tick: Box::new(move |at| sandboxes.iter().for_each(|s| s.advance_to(at))),
    };
    (config, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_queries_through_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let (handle, inbox) = service::channel(&mut engine, 16);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::run(engine, inbox, service_config(&world).0, async move {
        let _ = stopped.await;
    }));

    let mut batches = Vec::new();
    for b in 0..4u64 {
        let intake = handle.submit(MerchantId(1), format!("b{b}"), drafts(b * 250, 250)).await.unwrap().unwrap();
        let Intake::Accepted { batch, payments } = intake else { panic!("accepted") };
        batches.push((batch, payments));
    }
    // Accepted work is visible at once, without waiting for a round.
    let (batch, payments) = &batches[0];
    assert_eq!(handle.batch(*batch).unwrap().unwrap().payments, *payments);
    assert!(handle.payment(payments[0]).unwrap().is_some());
    let dry = handle.drain(name("base"), true, "op".into(), "preview".into()).await.unwrap().unwrap();
    assert!(dry.op.is_none());
    let refused = handle.pause(name("mars"), "op".into(), "x".into()).await.unwrap();
    assert!(matches!(refused, Err(OperatorError::UnknownRail(_))));
    assert!(matches!(
        handle.fund_pool(name("base"), Asset::USDC, Amount::ZERO, 77).await.unwrap(),
        Err(EngineError::Refused(_))
    ));

    while !handle.read(|m| m.is_quiet()) {
        tokio::time::sleep(Duration::from_millis(BLOCK_MS / SPEED)).await;
    }
    assert_eq!(handle.read(|m| m.counts.get(&PaymentState::Settled).copied()), Some(1_000));
    assert!(handle.read(|m| m.payments.is_empty() && m.batches.is_empty()), "finished work left the read model");
    for (batch, payments) in &batches {
        assert_eq!(handle.batch(*batch).unwrap().unwrap().payments, *payments, "from the history store");
        for id in payments {
            let record = handle.payment(*id).unwrap().expect("from the history store");
            assert_eq!(record.state, PaymentState::Settled);
            let settlement = handle.finished_settlement(record.settlement.unwrap()).unwrap().unwrap();
            assert_eq!(settlement.state, SettlementState::Final);
        }
    }
    let rails = handle.read(|m| m.rails.clone());
    assert_eq!(rails.len(), 3);
    assert!(rails.iter().all(|r| !r.paused && r.breaker == router::BreakerState::Closed));
    let report = handle.reconcile().await.unwrap().unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(handle.read(|m| m.outbox), 1_000, "a notice per settled payment awaits delivery");

    stop.send(()).unwrap();
    let engine = task.await.unwrap();
    assert_eq!(engine.state().book.count(PaymentState::Settled), 1_000);
    // The task is gone: the handle says so instead of waiting.
    let gone = handle.pause(name("base"), "op".into(), "x".into()).await;
    assert_eq!(gone.unwrap_err(), ServiceError::Unavailable);
}

/// A full channel answers busy at once; nothing waits for room.
#[tokio::test]
async fn a_full_channel_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    let (handle, inbox) = service::channel(&mut engine, 1);
    // Nobody runs the engine: the first command takes the only slot and waits there.
    let first = tokio::spawn({
        let handle = handle.clone();
        async move { handle.pause(name("base"), "op".into(), "x".into()).await }
    });
    tokio::task::yield_now().await;
    let second = handle.pause(name("base"), "op".into(), "y".into()).await;
    assert_eq!(second.unwrap_err(), ServiceError::Busy(1));
    drop(inbox);
    assert_eq!(first.await.unwrap().unwrap_err(), ServiceError::Unavailable, "a dropped command is unavailable");
}

/// While a round is stuck on a node that does not answer, queries are still answered from the
/// read model and the history store; a command waits for the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_do_not_wait_for_a_round() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let (rails, _, hangs) = counting(&world);
    let mut cfg = config();
    cfg.rail_timeout = Duration::from_secs(2);
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), cfg, rails, T0).await.unwrap();
    fund(&mut engine, T0).await;
    let (handle, inbox) = service::channel(&mut engine, 16);
    let task = tokio::spawn(service::run(engine, inbox, service_config(&world).0, std::future::pending()));
    let intake = handle.submit(MerchantId(1), "k".into(), drafts(0, 300)).await.unwrap().unwrap();
    let Intake::Accepted { payments, .. } = intake else { panic!("accepted") };
    // Let a few rounds sign and broadcast, then every node hangs: the next round is stuck in
    // its observations until the rail timeout (2 s).
    while handle.read(|m| m.counts.get(&PaymentState::Broadcast).copied().unwrap_or(0)) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hangs.iter().for_each(|h| h.store(true, Ordering::SeqCst));
    tokio::time::sleep(Duration::from_millis(3 * BLOCK_MS / SPEED)).await;
    let pause = tokio::spawn({
        let handle = handle.clone();
        async move { handle.pause(name("base"), "op".into(), "incident".into()).await }
    });
    tokio::task::yield_now().await;
    for id in &payments {
        assert!(handle.payment(*id).unwrap().is_some(), "answered while the round is stuck");
    }
    assert_eq!(handle.read(|m| m.counts.values().sum::<u64>()), 300);
    assert!(!pause.is_finished(), "a command waits for the round (stuck for 2 s)");
    hangs.iter().for_each(|h| h.store(false, Ordering::SeqCst));
    // The stuck round ends at its timeout; then the command is served.
    pause.await.unwrap().unwrap().unwrap();
    assert!(handle.read(|m| m.rails.iter().any(|r| r.rail == name("base") && r.paused)));
    task.abort();
}

/// A funded engine on a fresh journal in `dir`, run as a service until its task is aborted.
async fn serving(dir: &tempfile::TempDir, world: &World) -> (service::EngineHandle, tokio::task::JoinHandle<Engine>) {
    let mut engine = super::open_engine(&dir.path().join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let (handle, inbox) = service::channel(&mut engine, 64);
    (handle, tokio::spawn(service::run(engine, inbox, service_config(world).0, std::future::pending())))
}

/// Merchants' batches sent at once are admitted as they wait, in groups: each gets the answer
/// it would get alone (the same key and body twice is one batch; another body under a used key
/// is a conflict), no payment id is given twice, and every payment settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_sent_at_once_get_their_own_answers() {
    let (dir, world) = (tempfile::tempdir().unwrap(), World::new());
    let (handle, task) = serving(&dir, &world).await;
    // Batch 0 twice (same key, same body) among twelve.
    let sends = (0..13u64).map(|i| {
        let handle = handle.clone();
        let b = if i == 12 { 0 } else { i };
        async move { handle.submit(MerchantId(b % 3 + 1), format!("k{b}"), drafts(b * 100, 100)).await }
    });
    let answers: Vec<Intake> =
        futures::future::join_all(sends).await.into_iter().map(|a| a.unwrap().unwrap()).collect();
    let ids = |intake: &Intake| match intake {
        Intake::Accepted { batch, payments } | Intake::Duplicate { batch, payments } => (*batch, payments.clone()),
    };
    let accepted = answers.iter().filter(|a| matches!(a, Intake::Accepted { .. })).count();
    assert_eq!(accepted, 12, "twelve batches, one of them sent twice: {answers:?}");
    assert_eq!(ids(&answers[0]), ids(&answers[12]), "both sends of batch 0 name one batch");
    let mut all: Vec<PaymentId> = answers[..12].iter().flat_map(|a| ids(a).1).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 1_200, "no payment id is given twice");
    let conflict = handle.submit(MerchantId(1), "k0".into(), drafts(0, 99)).await.unwrap();
    assert!(matches!(conflict, Err(IntakeError::Conflict { batch }) if batch == ids(&answers[0]).0));

    // Polled once a round, for at most a minute of wall time (3,000 blocks of service time).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !handle.read(|m| m.is_quiet()) {
        assert!(std::time::Instant::now() < deadline, "settles: {:?}", handle.read(|m| m.counts.clone()));
        tokio::time::sleep(Duration::from_millis(BLOCK_MS / SPEED)).await;
    }
    assert_eq!(handle.read(|m| m.counts.get(&PaymentState::Settled).copied()), Some(1_200));
    task.abort();
}

/// Merchants keep the channel busy (commands are taken before a due round): rounds still run
/// while they do, with the batches waiting admitted in them (`tick_admitting`), so payments
/// settle during the stream, not only after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_batches_does_not_hold_rounds_back() {
    let (dir, world) = (tempfile::tempdir().unwrap(), World::new());
    let (handle, task) = serving(&dir, &world).await;
    streaming_settles(&handle, |handle, s, sent| async move {
        let start = s * 100_000 + sent * 10;
        handle.submit(MerchantId(s + 1), format!("s{s}-{sent}"), drafts(start, 10)).await.unwrap().unwrap();
    })
    .await;
    task.abort();
}

/// Treasury staff keep the channel busy with commands that are not batches (each funds a pool,
/// a journal commit): a due round still runs between them, so the batch accepted before the
/// stream settles during it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_other_commands_does_not_hold_rounds_back() {
    let (dir, world) = (tempfile::tempdir().unwrap(), World::new());
    let (handle, task) = serving(&dir, &world).await;
    handle.submit(MerchantId(1), "before".into(), drafts(0, 10)).await.unwrap().unwrap();
    streaming_settles(&handle, |handle, s, sent| async move {
        let transfer = u128::from(s) << 64 | u128::from(sent) | 1 << 100;
        handle.fund_pool(name("base"), Asset::USDC, Amount::new(1), transfer).await.unwrap().unwrap();
    })
    .await;
    task.abort();
}

/// Eight senders, more than the loop has threads, each sending its next command (`send`, given
/// the sender and its count so far) as soon as the last is answered, so one is nearly always
/// waiting: some payment must settle while they still send.
async fn streaming_settles<F, Fut>(handle: &service::EngineHandle, send: F)
where
    F: Fn(service::EngineHandle, u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let streaming = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let senders: Vec<_> = (0..8u64)
        .map(|s| {
            let (handle, streaming, send) = (handle.clone(), std::sync::Arc::clone(&streaming), send.clone());
            tokio::spawn(async move {
                let mut sent = 0u64;
                while streaming.load(Ordering::SeqCst) && sent < 2_000 {
                    send(handle.clone(), s, sent).await;
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let settled = || handle.read(|m| m.counts.get(&PaymentState::Settled).copied().unwrap_or(0));
    while settled() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let settled_while_streaming = settled();
    let still_streaming = senders.iter().all(|s| !s.is_finished());
    streaming.store(false, Ordering::SeqCst);
    let mut sent = 0;
    for sender in senders {
        sent += sender.await.unwrap();
    }
    assert!(still_streaming, "the senders ran out ({sent} commands) before a payment settled");
    assert!(settled_while_streaming > 0, "no payment settled while commands kept coming ({sent} sent)");
}
