//! HTTP ingest: 1,000-payment JSON batches posted by a load client over 127.0.0.1 to the real
//! API (axum, auth, parsing, the engine's command channel, a durable journal commit per batch),
//! against the engine's in-process intake of the same batches (`Engine::submit`, no HTTP) in the
//! same run. Prints payments/s durably accepted, p50/p99 batch latency, and the ratio.
//!
//! Both start from an empty journal on the embedded default configuration (sandbox rails);
//! rounds of routing are held off (a one-hour tick) so both measure intake, not settling.
//! `RAILYARD_BENCH_BATCHES` (default 1000, so 1,000,000 payments) and
//! `RAILYARD_BENCH_CLIENTS` (concurrent HTTP clients, default 4) scale it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::service::{self, ServiceConfig};
use engine::{Draft, Engine, Intake};
use model::*;

const BATCH: u64 = 1_000;
const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

fn now() -> Timestamp {
    Timestamp(u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap())
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn address(i: u64) -> String {
    format!("0x{}", blake3::hash(&i.to_le_bytes()).to_hex()[..40].to_owned())
}

fn drafts(batch: u64) -> Vec<Draft> {
    (batch * BATCH..(batch + 1) * BATCH)
        .map(|i| Draft {
            reference: format!("r-{i}"),
            amount: Amount::new(1_000_000 + u128::from(i % 1_000)),
            asset: Asset::USDC,
            destination: address(i),
            networks: vec![Network::BASE, Network::OPTIMISM],
            class: Name::new("standard").unwrap(),
            deadline: None,
        })
        .collect()
}

fn json(batch: u64) -> Vec<u8> {
    let payments: Vec<serde_json::Value> = (batch * BATCH..(batch + 1) * BATCH)
        .map(|i| {
            serde_json::json!({
                "reference": format!("r-{i}"),
                "amount": Asset::USDC.format_amount(Amount::new(1_000_000 + u128::from(i % 1_000))),
                "asset": "USDC",
                "destination": address(i),
                "networks": ["base", "optimism"],
                "class": "standard",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "payments": payments })).unwrap()
}

async fn open(dir: &std::path::Path) -> (Engine, config::Loaded) {
    let overrides = vec![
        ("RAILYARD__QUEUE__CAPACITY".to_owned(), "10000000".to_owned()),
        ("RAILYARD__QUEUE__CAPACITY_PER_MERCHANT".to_owned(), "10000000".to_owned()),
    ];
    let loaded = config::load(&config::parse(DEFAULT_CONFIG, &overrides).unwrap()).unwrap();
    let built = config::build_rails(&loaded.rails, now()).await.unwrap();
    let engine = Engine::open(&dir.join("journal.redb"), loaded.engine.clone(), built.rails, now()).await.unwrap();
    (engine, loaded)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn report(name: &str, latencies: &mut [Duration], elapsed: Duration, payments: u64) -> u64 {
    latencies.sort();
    let per_second = u64::try_from(u128::from(payments) * 1_000_000 / elapsed.as_micros().max(1)).unwrap();
    println!(
        "{name:<12} {payments} payments in {elapsed:.2?}: {per_second} payments/s durably accepted; batch latency p50 {:.2?}, p99 {:.2?}",
        percentile(latencies, 50),
        percentile(latencies, 99)
    );
    per_second
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let batches = env("RAILYARD_BENCH_BATCHES", 1_000);
    let clients = usize::try_from(env("RAILYARD_BENCH_CLIENTS", 4).max(1)).unwrap();
    let merchant = MerchantId(1);

    // Baseline: the engine's own intake, in process.
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, _) = open(dir.path()).await;
    let all: Vec<Vec<Draft>> = (0..batches).map(drafts).collect();
    let mut latencies = Vec::new();
    let started = Instant::now();
    for (i, batch) in all.iter().enumerate() {
        let t = Instant::now();
        let accepted = engine.submit(merchant, &format!("b-{i}"), batch, now()).await.unwrap();
        assert!(matches!(accepted, Intake::Accepted { .. }));
        latencies.push(t.elapsed());
    }
    let in_process = report("in-process", &mut latencies, started.elapsed(), batches * BATCH);
    drop((engine, all));

    // The API: a real server on 127.0.0.1 and a load client.
    let dir = tempfile::tempdir().unwrap();
    let (mut engine, loaded) = open(dir.path()).await;
    let key = api::auth::generate().unwrap();
    engine.create_key(key.hash, Role::Merchant, Some(merchant), "bench", "bench", now()).await.unwrap();
    let (handle, inbox) = service::channel(&mut engine, 1024);
    let config = ServiceConfig { tick: Duration::from_secs(3_600), now: Box::new(now), before_tick: Box::new(|_| {}) };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(service::run(engine, inbox, config, async move {
        stopped.await.ok();
    }));
    let mut settings = api::ApiConfig::new(vec![Asset::USDC, Asset::ETH], loaded.engine.batch_payments_max, [7; 32]);
    settings.requests_per_second = 1_000_000;
    settings.requests_burst = 1_000_000;
    let app = api::app(api::Api::new(handle, settings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/batches", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let bodies: Vec<Vec<u8>> = (0..batches).map(json).collect();
    let bodies = std::sync::Arc::new(bodies);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (client, url, secret, bodies) = (client.clone(), url.clone(), key.secret.clone(), bodies.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (worker..bodies.len()).step_by(clients) {
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .bearer_auth(&secret)
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("h-{i}"))
                        .body(bodies[i].clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap());
                    response.bytes().await.unwrap();
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let http = report("http", &mut latencies, started.elapsed(), batches * BATCH);
    println!(
        "http / in-process: {}.{:03} ({clients} clients, {BATCH}-payment JSON batches)",
        http * 1_000 / in_process.max(1) / 1_000,
        http * 1_000 / in_process.max(1) % 1_000
    );
    server.abort();
    stop.send(()).ok();
    task.await.unwrap();
}
