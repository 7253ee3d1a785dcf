//! Routing decisions per second over 10 rails and 1,000 rule overrides, with per-decision
//! latency percentiles, against a baseline measured in the same run: picking the first rail
//! that carries the asset (no rules, no scoring, no reasons).
//!
//! Run: `cargo bench -p benches --bench router_decisions`.
#![allow(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use model::{
    Address, Amount, Asset, BatchId, Capabilities, ChainId, MerchantId, Name, Network, Payment, PaymentId, RailId,
    Timestamp,
};
use router::{BreakerState, RailState, Router, Rule, Weights};

const RAILS: usize = 10;
const RULES: usize = 1_000;
const PAYMENTS: usize = 4_096;
const GROUP: &str = "router";

fn rails() -> Vec<Capabilities> {
    (0..RAILS)
        .map(|i| Capabilities {
            rail: Name::new(&format!("rail-{i}")).unwrap(),
            network: Network::Evm(ChainId(1000 + i as u64)),
            fee_asset: Asset::ETH,
            assets: if i % 3 == 0 { vec![Asset::ETH, Asset::USDC] } else { vec![Asset::ETH, Asset::USDC, Asset::USDT] },
            amount_min: Amount::new(1),
            amount_max: Amount::new(10u128.pow(12)),
            batch_size_max: 200,
            confirmations_final: 12,
            can_replace: true,
            finality_expected_ms: 2_000 + 10_000 * i as u64,
        })
        .collect()
}

fn rules(rails: &[Capabilities]) -> Vec<Rule> {
    let rail = |i: usize| rails[i % RAILS].rail;
    (0..RULES)
        .map(|i| match i % 20 {
            0 => Rule::AmountAtLeastOnly {
                asset: [Asset::USDC, Asset::USDT][i % 2],
                amount: Amount::new(10u128.pow(9) + i as u128),
                rails: vec![rail(0), rail(1)],
            },
            1 => Rule::AssetPrefers {
                asset: [Asset::USDC, Asset::USDT, Asset::ETH][i % 3],
                rails: vec![rail(i), rail(i + 1), rail(i + 2)],
            },
            _ => Rule::MerchantOnly { merchant: MerchantId(i as u64), rails: vec![rail(i), rail(i + 3), rail(i + 7)] },
        })
        .collect()
}

fn payments(rails: &[Capabilities]) -> Vec<Payment> {
    let networks: Vec<Network> = rails.iter().map(|c| c.network).collect();
    let destination = Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", networks[0]).unwrap();
    (0..PAYMENTS)
        .map(|i| Payment {
            id: PaymentId(i as u128),
            batch: BatchId(1),
            merchant: MerchantId((i * 7 % 2_000) as u64),
            reference: format!("r{i}"),
            amount: Amount::new(1_000 + (i as u128 * 7_919) % 2_000_000_000),
            asset: [Asset::USDC, Asset::USDT, Asset::ETH][i % 3],
            destination: destination.clone(),
            networks: networks.clone(),
            class: Name::new("standard").unwrap(),
            deadline: None,
            metadata: BTreeMap::new(),
        })
        .collect()
}

fn available(_: RailId, _: Asset) -> Amount {
    Amount::new(10u128.pow(15))
}

fn baseline(payment: &Payment, rails: &[RailState<'_>]) -> Option<RailId> {
    rails.iter().find(|r| r.capabilities.assets.contains(&payment.asset)).map(|r| r.capabilities.rail)
}

fn main() {
    let caps = rails();
    let router = Router::new(Weights::default(), rules(&caps)).unwrap();
    let states: Vec<RailState<'_>> = caps
        .iter()
        .enumerate()
        .map(|(i, c)| RailState {
            capabilities: c,
            breaker: if i == 5 { BreakerState::Open { until: Timestamp(u64::MAX) } } else { BreakerState::Closed },
            fee_cost: 1_000 + 37 * i as u64,
            fee_reserve: Amount::new(10u128.pow(15) / 1_000),
            success_permille: 1000 - 13 * i as u32,
        })
        .collect();
    let payments = payments(&caps);
    let now = Timestamp(1_700_000_000_000);
    let deadline = Timestamp(now.0 + 3_600_000);

    let out = benches::output_dir("router_decisions");
    let mut criterion = Criterion::default()
        .output_directory(&out)
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group(GROUP);
    let mut i = 0;
    group.bench_function("railyard", |b| {
        b.iter(|| {
            i = (i + 1) % PAYMENTS;
            black_box(router.decide(&payments[i], deadline, &states, &available, now))
        })
    });
    group.bench_function("first_rail", |b| {
        b.iter(|| {
            i = (i + 1) % PAYMENTS;
            black_box(baseline(&payments[i], &states))
        })
    });
    group.finish();
    criterion.final_summary();

    // Latency percentiles of single decisions, measured one by one.
    let mut latencies: Vec<u128> = Vec::with_capacity(200_000);
    let mut chosen = 0usize;
    for round in 0..200_000 {
        let payment = &payments[round % PAYMENTS];
        let started = Instant::now();
        let decision = black_box(router.decide(payment, deadline, &states, &available, now));
        latencies.push(started.elapsed().as_nanos());
        chosen += usize::from(decision.chosen.is_some());
    }
    latencies.sort_unstable();
    let pct = |p: usize| latencies[latencies.len() * p / 100 - 1] as f64 / 1000.0;
    println!("\nrouting over {RAILS} rails and {RULES} rule overrides ({chosen} of 200000 decisions chose a rail)");
    println!(
        "latency per decision: p50 {:.2} µs, p99 {:.2} µs, max {:.2} µs",
        pct(50),
        pct(99),
        *latencies.last().unwrap() as f64 / 1000.0
    );
    if let (Some(ours), Some(base)) =
        (benches::mean_ns(&out, GROUP, "railyard"), benches::mean_ns(&out, GROUP, "first_rail"))
    {
        println!("{:>16} {:>16} {:>8}", "railyard dec/s", "first-rail dec/s", "ratio");
        println!("{:>16.0} {:>16.0} {:>7.1}%", 1e9 / ours, 1e9 / base, 100.0 * base / ours);
    }
}
