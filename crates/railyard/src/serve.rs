//! `railyard serve`: the engine on its configured rails, driven by the real clock.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use config::{JournalSpec, Loaded, build_rails, load, parse};
use engine::service::{self, EngineHandle, ServiceConfig};
use engine::{Draft, Engine, Intake};
use model::{Amount, Asset, MerchantId, Name, Network, Role, Timestamp};

/// The embedded default: a redb journal in ./data and sandbox rails, so an installed binary
/// starts with no file beside it.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// Reads the configuration file, or the embedded default when none is named; environment
/// variables `RAILYARD__…` override either.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Loaded> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        None => DEFAULT_CONFIG.to_owned(),
    };
    let overrides: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("RAILYARD__")).collect();
    let file = parse(&text, &overrides)?;
    Ok(load(&file)?)
}

pub(crate) fn now() -> Timestamp {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    Timestamp(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Deterministic demo payments to fresh addresses: USDC allowed on every EVM network, and,
/// when a rail carries Bitcoin, every tenth one BTC to a P2WPKH address.
fn demo(count: u64, networks: &[Network]) -> Vec<Draft> {
    let classes = ["urgent", "payroll", "standard", "bulk"];
    let evm: Vec<Network> = networks.iter().filter(|n| matches!(n, Network::Evm(_))).copied().collect();
    let btc: Vec<Network> = networks.iter().filter(|n| matches!(n, Network::Bitcoin(_))).copied().collect();
    (0..count)
        .map(|i| {
            let hash = blake3::hash(&i.to_le_bytes());
            let twenty: [u8; 20] = hash.as_bytes()[..20].try_into().expect("20 bytes");
            if let (true, Some(Network::Bitcoin(network))) = (i % 10 == 9 || evm.is_empty(), btc.first()) {
                let program =
                    bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &twenty).expect("a 20-byte v0 program");
                let address = bitcoin::Address::from_witness_program(program, network.to_bitcoin());
                return Draft {
                    reference: format!("demo-{count}-{i}"),
                    amount: Amount::new(100_000 + u128::from(i % 1_000) * 1_000),
                    asset: Asset::BTC,
                    destination: address.to_string(),
                    networks: btc.iter().filter(|n| **n == Network::Bitcoin(*network)).copied().collect(),
                    class: Name::new(classes[(i % 4) as usize]).expect("valid class"),
                    deadline: None,
                };
            }
            let hex: String = twenty.iter().map(|b| format!("{b:02x}")).collect();
            Draft {
                // A reference names one payment per merchant: the batch's size is part of it,
                // so a demo of another size is another batch, not a repeat.
                reference: format!("demo-{count}-{i}"),
                amount: Amount::new(1_000_000 + u128::from(i % 1_000) * 10_000),
                asset: Asset::USDC,
                destination: format!("0x{hex}"),
                networks: evm.clone(),
                class: Name::new(classes[(i % 4) as usize]).expect("valid class"),
                deadline: None,
            }
        })
        .collect()
}

/// The server's webhook signing root: 32 random bytes in the data directory, made on first
/// start (readable by the owner only).
fn webhook_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join("webhook.key");
    if let Ok(bytes) = std::fs::read(&path) {
        return bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{} is not 32 bytes; remove it to make a new one (receivers then need the new signing secrets)",
                path.display()
            )
        });
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness for the webhook key: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(
        &mut options.open(&path).with_context(|| format!("cannot create {}", path.display()))?,
        &key,
    )?;
    Ok(key)
}

/// Opens the engine on the configured journal: `journal.redb` in the data directory, or a
/// PostgreSQL database (its schema created or migrated first).
async fn open_engine(loaded: &Loaded, built: &config::BuiltRails) -> anyhow::Result<Engine> {
    let rails = built.rails.clone();
    match &loaded.journal {
        JournalSpec::Redb => {
            let path = loaded.data_dir.join("journal.redb");
            Ok(Engine::open(&path, loaded.engine.clone(), rails, now()).await?)
        }
        JournalSpec::Postgres { url, .. } => {
            let store = journal_pg::PgStore::connect(url)
                .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL journal: {e}"))?;
            let journal = journal::Journal::with_store(std::sync::Arc::new(store), loaded.engine.journal.clone())?;
            Ok(Engine::open_on(journal, loaded.engine.clone(), rails, now()).await?)
        }
    }
}

/// Creates an admin key on the engine and returns its secret (to show once).
pub async fn create_admin_key(engine: &mut Engine, by: &str) -> anyhow::Result<String> {
    let key = api::auth::generate().map_err(|e| anyhow::anyhow!("no randomness for an API key: {e}"))?;
    engine.create_key(key.hash, Role::Admin, None, "admin", by, now()).await?;
    Ok(key.secret)
}

/// Opens the journal while no server runs and adds an admin key (a lost or never-seen first
/// key is replaced this way; revoke the old one after).
pub async fn admin_key(loaded: Loaded) -> anyhow::Result<()> {
    let built = build_rails(&loaded.rails, now()).await?;
    let mut engine = open_engine(&loaded, &built)
        .await
        .context("cannot open the engine (is a server running on this data directory?)")?;
    let secret = create_admin_key(&mut engine, "railyard admin-key (offline)").await?;
    println!("admin API key (shown once, store it now): {secret}");
    Ok(())
}

/// Journals the configured start-up funding of pools still empty, and creates a first admin
/// key when there is none (its secret returned, to show once).
pub(crate) async fn prepare(engine: &mut Engine, loaded: &Loaded) -> anyhow::Result<Option<String>> {
    // On a shared journal, in this node's turn (a no-op alone).
    engine.begin_turn().await?;
    let prepared = prepare_in_turn(engine, loaded).await;
    let ended = engine.end_turn().await;
    let prepared = prepared?;
    ended?;
    Ok(prepared)
}

async fn prepare_in_turn(engine: &mut Engine, loaded: &Loaded) -> anyhow::Result<Option<String>> {
    for (rail, asset, amount) in &loaded.funding {
        if engine.state().pools.available(*rail, *asset).is_zero() {
            let transfer = u128::from_le_bytes(
                blake3::hash(format!("fund:{rail}:{asset}").as_bytes()).as_bytes()[..16].try_into()?,
            );
            engine.fund_pool(*rail, *asset, *amount, transfer, now()).await?;
        }
    }
    if engine.state().access.has_admin() {
        return Ok(None);
    }
    Ok(Some(create_admin_key(engine, "railyard serve (first start)").await?))
}

/// How the engine task runs: alone on its journal, or as one node of several.
enum Running {
    Alone(Engine),
    Node(Box<crate::cluster::Node>, Engine),
}

pub async fn serve(loaded: Loaded, demo_payments: u64, exit_when_settled: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(&loaded.data_dir)
        .with_context(|| format!("cannot create {}", loaded.data_dir.display()))?;
    // Bound first: a port in use must stop the start before a first admin key is made (and
    // then never shown).
    let listener = tokio::net::TcpListener::bind(loaded.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set api.listen or RAILYARD__API__LISTEN)", loaded.api.listen))?;
    let address = listener.local_addr()?;
    let built = build_rails(&loaded.rails, now()).await?;
    let networks: Vec<Network> = built.rails.iter().map(|r| r.capabilities().network).collect();
    let (mut running, reads) = match &loaded.journal {
        JournalSpec::Postgres { url, lease_ttl, advertise_url, pool_size } => {
            let holder = advertise_url.clone().unwrap_or_else(|| format!("http://{address}"));
            let settings = crate::cluster::NodeSettings { url, ttl: *lease_ttl, holder: &holder, readers: *pool_size };
            let mut node = crate::cluster::Node::start(&loaded, built.rails.clone(), &settings).await?;
            let engine = node.open().await.context("cannot open the engine")?;
            let reads = node.reads().clone();
            (Running::Node(Box::new(node), engine), reads)
        }
        JournalSpec::Redb => {
            let engine = open_engine(&loaded, &built).await.context("cannot open the engine")?;
            let reads = engine.journal().clone();
            (Running::Alone(engine), reads)
        }
    };
    let first_admin = match &mut running {
        Running::Alone(engine) | Running::Node(_, engine) if engine.coordinates() && !engine.is_standby() => {
            prepare(engine, &loaded).await?
        }
        _ => None,
    };
    let webhook_key = webhook_key(&loaded.data_dir)?;
    let assets: Vec<Asset> = {
        let mut all: Vec<Asset> = built.rails.iter().flat_map(|r| r.capabilities().assets.clone()).collect();
        all.sort();
        all.dedup();
        all
    };
    // From here on one task owns the engine; this function talks to it through its handle.
    let (handle, inbox) = service::unattached(1024, reads);
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
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = {
        let stopped = stopped.clone();
        move || {
            let mut stopped = stopped.clone();
            async move {
                // Ends when `stop` sends or is dropped: either way, stop.
                let _ = stopped.wait_for(|s| *s).await;
            }
        }
    };
    let mut settings = api::ApiConfig::new(assets, loaded.engine.batch_payments_max, webhook_key);
    settings.body_bytes_max = loaded.api.body_bytes_max;
    settings.requests_per_second = loaded.api.requests_per_second;
    settings.requests_burst = loaded.api.requests_burst;
    let api = api::Api::new(handle.clone(), settings);
    let supervised = matches!(running, Running::Node(..));
    let task = match running {
        Running::Alone(mut engine) => {
            service::attach(&mut engine, &inbox, now());
            let until = shutdown();
            tokio::spawn(async move {
                drop(service::run(engine, inbox, config, until).await);
            })
        }
        Running::Node(node, engine) => tokio::spawn(node.run(engine, inbox, config, api.clone(), stopped)),
    };
    let server = tokio::spawn({
        let app = api::app(api.clone());
        let shutdown = shutdown();
        async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await }
    });
    let sender = tokio::spawn(api::webhooks::run(api.clone(), api::webhooks::SenderConfig::default(), shutdown()));
    let sampler = tokio::spawn(api::dashboard::sample_pools(api.clone(), Duration::from_secs(10), shutdown()));
    api.set_ready(true);
    println!("railyard listening on http://{address}");
    if let Some(secret) = first_admin {
        println!("admin API key (shown once, store it now): {secret}");
    }
    let journal = match &loaded.journal {
        JournalSpec::Redb => loaded.data_dir.join("journal.redb").display().to_string(),
        postgres => format!("{postgres:?}"),
    };
    let driving = Driving { demo_payments, exit_when_settled, supervised, journal, tick: loaded.tick };
    let outcome = drive(&handle, &networks, &driving).await;
    api.set_ready(false);
    let _ = stop.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(%error, "the HTTP server failed"),
        Err(error) => tracing::error!(%error, "the HTTP server task failed"),
    }
    if let Err(error) = sender.await {
        tracing::error!(%error, "the webhook sender failed");
    }
    if let Err(error) = sampler.await {
        tracing::error!(%error, "the pool sampler failed");
    }
    task.await.context("the engine task failed")?;
    outcome
}

/// Submits the demo batch, then prints the payments by state every 5 seconds until Ctrl-C, or
/// until everything is settled when asked to stop then.
struct Driving {
    demo_payments: u64,
    exit_when_settled: bool,
    /// One node of several: a stopped engine is reopened by the node, not the end.
    supervised: bool,
    journal: String,
    tick: Duration,
}

async fn drive(handle: &EngineHandle, networks: &[Network], driving: &Driving) -> anyhow::Result<()> {
    let Driving { demo_payments, exit_when_settled, supervised, ref journal, tick } = *driving;
    // Any node admits a batch (on a node that does not coordinate yet, in its turn on the
    // shared journal); the same demo batch sent again, by this node or another, is recognised.
    if demo_payments > 0 {
        let key = format!("demo-{demo_payments}");
        match handle.submit(MerchantId(1), key, demo(demo_payments, networks)).await?? {
            Intake::Accepted { payments, .. } => println!("accepted {} demo payments", payments.len()),
            Intake::Duplicate { payments, .. } => println!("demo batch already accepted ({} payments)", payments.len()),
        }
    }
    println!("railyard serving: journal {journal}, {} rails, tick {tick:?}", networks.len());
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
        if let Some(reason) = stopped
            && !supervised
        {
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
