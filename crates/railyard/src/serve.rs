//! `railyard serve`: the engine on its configured rails, driven by the real clock.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use config::{Loaded, build_rails, load, parse};
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
    if demo_payments > 0 {
        let key = format!("demo-{demo_payments}");
        match engine.submit(MerchantId(1), &key, &demo(demo_payments, &networks), now()).await? {
            Intake::Accepted { payments, .. } => println!("accepted {} demo payments", payments.len()),
            Intake::Duplicate { payments, .. } => println!("demo batch already accepted ({} payments)", payments.len()),
        }
    }
    println!("railyard serving: journal {}, {} rails, tick {:?}", journal.display(), networks.len(), loaded.tick);
    let started = Instant::now();
    let mut last_status = Instant::now();
    let mut ticker = tokio::time::interval(loaded.tick);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => {
                println!("railyard: interrupted; the journal holds everything, start again to resume");
                return Ok(());
            }
        }
        let at = now();
        for sandbox in &built.sandboxes {
            sandbox.advance_to(at);
        }
        engine.tick(at).await?;
        let all_done = engine.state().book.is_quiet();
        if last_status.elapsed() >= Duration::from_secs(5) || (exit_when_settled && all_done) {
            last_status = Instant::now();
            println!(
                "[{:>5.0?}] payments {:?} journal {} records",
                started.elapsed(),
                engine.count_by_state(),
                engine.journal().tip()
            );
        }
        if exit_when_settled && all_done {
            return Ok(());
        }
    }
}
