//! `railyard serve`: the engine on its configured rails, driven by the real clock.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use config::{Loaded, build_rails, load, parse};
use engine::service::{self, EngineHandle, ServiceConfig};
use engine::{Draft, Engine, Intake};
use model::{Amount, Asset, MerchantId, Name, Network, Timestamp};

pub fn load_config(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let overrides: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("RAILYARD__")).collect();
    let file = parse(&text, &overrides)?;
    Ok(load(&file)?)
}

fn now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Deterministic demo payments: USDC to fresh addresses, allowed on every sandbox network.
fn demo(count: u64, networks: &[Network]) -> Vec<Draft> {
    let classes = ["urgent", "payroll", "standard", "bulk"];
    (0..count)
        .map(|i| {
            let hash = blake3::hash(&i.to_le_bytes());
            let hex: String = hash.as_bytes()[..20].iter().map(|b| format!("{b:02x}")).collect();
            Draft {
                reference: format!("demo-{i}"),
                amount: Amount::new(1_000_000 + u128::from(i % 1_000) * 10_000),
                asset: Asset::USDC,
                destination: format!("0x{hex}"),
                networks: networks.to_vec(),
                class: Name::new(classes[(i % 4) as usize]).expect("valid class"),
                deadline: None,
            }
        })
        .collect()
}

pub async fn serve(loaded: Loaded, demo_payments: u64, exit_when_settled: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&loaded.data_dir)
        .with_context(|| format!("cannot create {}", loaded.data_dir.display()))?;
    let built = build_rails(&loaded.rails, now()).await?;
    let networks: Vec<Network> = built.rails.iter().map(|r| r.capabilities().network).collect();
    let journal = loaded.data_dir.join("journal.redb");
    let mut engine =
        Engine::open(&journal, loaded.engine.clone(), built.rails, now()).await.context("cannot open the engine")?;
    for (rail, asset, amount) in &loaded.funding {
        if engine.state().pools.available(*rail, *asset).is_zero() {
            let transfer = u128::from_le_bytes(
                blake3::hash(format!("fund:{rail}:{asset}").as_bytes()).as_bytes()[..16].try_into()?,
            );
            engine.fund_pool(*rail, *asset, *amount, transfer, now()).await?;
        }
    }
    // From here on one task owns the engine; this function talks to it through its handle.
    let (handle, inbox) = service::channel(&mut engine, 1024);
    let sandboxes = built.sandboxes.clone();
    let config = ServiceConfig {
        tick: loaded.tick,
        now: Box::new(now),
        before_tick: Box::new(move |at| {
            for sandbox in &sandboxes {
                sandbox.advance_to(at);
            }
        }),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::run(engine, inbox, config, async move {
        let _ = stopped.await;
    }));
    let outcome = drive(&handle, &networks, demo_payments, exit_when_settled, &journal, loaded.tick).await;
    let _ = stop.send(());
    task.await.context("the engine task failed")?;
    outcome
}

/// Submits the demo batch, then prints the payments by state every 5 seconds until Ctrl-C, or
/// until everything is settled when asked to stop then.
async fn drive(
    handle: &EngineHandle,
    networks: &[Network],
    demo_payments: u64,
    exit_when_settled: bool,
    journal: &Path,
    tick: Duration,
) -> anyhow::Result<()> {
    if demo_payments > 0 {
        let key = format!("demo-{demo_payments}");
        match handle.submit(MerchantId(1), key, demo(demo_payments, networks)).await?? {
            Intake::Accepted { payments, .. } => println!("accepted {} demo payments", payments.len()),
            Intake::Duplicate { payments, .. } => println!("demo batch already accepted ({} payments)", payments.len()),
        }
    }
    println!("railyard serving: journal {}, {} rails, tick {tick:?}", journal.display(), networks.len());
    let started = Instant::now();
    let mut last_status = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = tokio::signal::ctrl_c() => {
                println!("railyard: interrupted; the journal holds everything, start again to resume");
                return Ok(());
            }
        }
        let (counts, tip, quiet, stopped, differences) = handle
            .read(|m| (m.counts_by_name(), m.tip, m.is_quiet() && m.tip > 0, m.stopped.clone(), m.differences_found));
        if let Some(reason) = stopped {
            anyhow::bail!("the engine stopped: {reason}");
        }
        let done = exit_when_settled && quiet;
        if last_status.elapsed() >= Duration::from_secs(5) || done {
            last_status = Instant::now();
            println!("[{:>5.0?}] payments {counts:?} journal {tip} records", started.elapsed());
            if differences > 0 {
                println!("        reconciliation found {differences} difference(s): see the log");
            }
        }
        if done {
            return Ok(());
        }
    }
}
