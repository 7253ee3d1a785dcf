//! The incident report against a scripted outage on sandbox rails: the base chain goes dark
//! mid-run, its breaker opens, an operator pauses and drains it; the report names the rail,
//! what was drained, the actions with who and why, and the recovery estimate's inputs; after
//! the chain returns and the rail is resumed, the resume is in the report and nothing is
//! delayed any more. The Markdown is kept in the test output as a sample.

use std::time::Duration;

use engine::service::{self, EngineHandle};
use engine::*;
use model::*;
use rails::sandbox::Fault;

use super::service::service_config;
use super::{T0, World, config, drafts, fund, name};

/// A funded engine running as a service on the sped-up clock: its handle, the clock, and how
/// to stop it.
async fn running(
    dir: &std::path::Path,
    world: &World,
) -> (EngineHandle, impl Fn() -> Timestamp + Copy, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Engine>) {
    let mut engine = super::open_engine(&dir.join("journal.redb"), config(), world.rails(), T0).await.unwrap();
    fund(&mut engine, T0).await;
    let (handle, inbox) = service::channel(&mut engine, 64);
    let (service_config, now) = service_config(world);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::run(engine, inbox, service_config, async move {
        let _ = stopped.await;
    }));
    (handle, now, stop, task)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_report_tells_a_scripted_outage() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let (handle, now, stop, task) = running(dir.path(), &world).await;
    handle.submit(MerchantId(1), "before".into(), drafts(0, 300)).await.unwrap().unwrap();
    until("settlements in flight", || handle.read(|m| !m.settlements.is_empty())).await;

    let outage_start = now();
    world.sandboxes[0].inject(Fault::Outage);
    handle.submit(MerchantId(2), "during".into(), drafts(300, 600)).await.unwrap().unwrap();
    let base = name("base");
    until("the base breaker to open", || {
        handle
            .read(|m| m.rails.iter().any(|r| r.rail == base && matches!(r.breaker, router::BreakerState::Open { .. })))
    })
    .await;
    handle.pause(base, "operator key 01".into(), "base RPC down".into()).await.unwrap().unwrap();
    let drained =
        handle.drain(base, false, "operator key 01".into(), "move base's queue".into()).await.unwrap().unwrap();

    let report = engine::report::incident(&handle, outage_start, now()).unwrap();
    let rail = report.rails.iter().find(|r| r.rail == "base").expect("base is affected");
    assert!(rail.paused_now && rail.signs.iter().any(|s| s.contains("base RPC down")), "{rail:?}");
    assert!(rail.recovery.contains("operator resumes"), "{}", rail.recovery);
    assert!(report.rails.iter().all(|r| r.rail == "base"), "only base is affected: {:?}", report.rails);
    if !drained.moves.is_empty() {
        assert_eq!(report.drains.len(), 1);
        assert_eq!(usize::try_from(report.drains[0].moved).unwrap(), drained.moves.len());
    }
    let whats: Vec<&str> = report.actions.iter().map(|a| a.what.as_str()).collect();
    assert!(whats.contains(&"paused base"), "{whats:?}");
    assert!(report.actions.iter().all(|a| a.at >= outage_start.0), "only the window's actions");
    let markdown = report.markdown();
    for heading in ["# Incident report", "## Affected rails", "## Delayed payments", "## In flight", "## Actions"] {
        assert!(markdown.contains(heading), "{heading}");
    }
    let sample = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("incident-report-sample.md");
    std::fs::write(&sample, &markdown).unwrap();
    println!("sample incident report: {}", sample.display());

    // The chain comes back, the operator resumes the rail, everything settles.
    world.sandboxes[0].inject(Fault::Restore);
    handle.resume(base, "operator key 01".into(), "base RPC back".into()).await.unwrap().unwrap();
    until("every payment to settle", || handle.read(|m| m.is_quiet() && m.payments.is_empty())).await;
    let after = engine::report::incident(&handle, outage_start, now()).unwrap();
    assert!(after.actions.iter().any(|a| a.what == "resumed base" && a.reason == "base RPC back"));
    assert!(after.delayed.is_empty() && after.held_now == 0 && after.in_flight.is_empty(), "{after:?}");
    let rail = after.rails.iter().find(|r| r.rail == "base").expect("base was affected in the window");
    assert!(!rail.paused_now);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Statistics over a window: everything accepted settled, counted per rail, asset and class
/// with the amounts the merchants asked for; fees per payout; time to final; no exposure left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_what_settled_in_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let world = World::new();
    let (handle, now, stop, task) = running(dir.path(), &world).await;
    let start = now();
    let batch = drafts(0, 400);
    handle.submit(MerchantId(1), "stats".into(), batch.clone()).await.unwrap().unwrap();
    until("every payment to settle", || handle.read(|m| m.counts.get(&PaymentState::Settled) == Some(&400))).await;
    let stats = engine::stats::stats(&handle, start, now()).unwrap();
    assert_eq!((stats.accepted, stats.sampled), (400, false), "{stats:?}");
    assert_eq!(stats.settled.iter().map(|s| s.count).sum::<u64>(), 400, "{stats:?}");
    for asset in [Asset::USDC, Asset::ETH] {
        let asked = Amount::try_sum(batch.iter().filter(|d| d.asset == asset).map(|d| d.amount)).unwrap();
        let settled = Amount::try_sum(
            stats.settled.iter().filter(|s| s.asset == asset.symbol()).map(|s| asset.parse_amount(&s.amount).unwrap()),
        )
        .unwrap();
        assert_eq!(settled, asked, "{asset}");
    }
    let classes: std::collections::BTreeSet<&str> = stats.settled.iter().map(|s| s.class.as_str()).collect();
    assert!(classes.len() > 1 && !classes.contains("unknown"), "{classes:?}");
    assert_eq!(stats.fees.iter().map(|f| f.payouts).sum::<u64>(), 400);
    assert!(stats.fees.iter().all(|f| f.total != "0"), "{:?}", stats.fees);
    assert_eq!(stats.time_to_final.count, 400);
    assert!(
        0 < stats.time_to_final.p50_ms && stats.time_to_final.p50_ms <= stats.time_to_final.p99_ms,
        "{:?}",
        stats.time_to_final
    );
    assert_eq!((stats.settlements_rolled_back, stats.rollback_permille, stats.hold_permille), (0, 0, 0));
    assert!(stats.exposure.is_empty(), "{:?}", stats.exposure);
    // A window after it all is empty.
    let later = engine::stats::stats(&handle, now(), now()).unwrap();
    assert_eq!((later.accepted, later.settled.len()), (0, 0));
    stop.send(()).unwrap();
    task.await.unwrap();
}
