//! What a seed builds: the sandbox chains (block times, fees, batch sizes), the engine's
//! configuration (pools with minimums, classes, breaker), the pools' funding and the
//! merchants' workload. Everything comes from the seed's random stream, in a fixed order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::{Draft, EngineConfig, StateConfig};
use model::*;
use queue::QueueConfig;
use rails::Rail;
use rails::sandbox::{SandboxConfig, SandboxRail};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};

pub(crate) const T0: Timestamp = Timestamp(1_700_000_000_000);
const CHAINS: [(&str, u64); 3] = [("base", 8453), ("optimism", 10), ("arbitrum", 42161)];
pub(crate) const CLASSES: [&str; 4] = ["urgent", "payroll", "standard", "bulk"];
pub(crate) const MERCHANTS: u64 = 5;

pub(crate) fn name(text: &str) -> Name {
    Name::new(text).expect("the simulator's names are valid")
}

/// One simulated chain and what the workload may send over it.
#[derive(Debug)]
pub(crate) struct Chain {
    pub(crate) rail: Arc<SandboxRail>,
    pub(crate) id: RailId,
    pub(crate) network: Network,
    pub(crate) confirmations_final: u32,
}

#[derive(Debug)]
pub(crate) struct World {
    pub(crate) chains: Vec<Chain>,
    /// Pool funding: (rail, asset, amount), each a transfer of its own.
    pub(crate) funding: Vec<(RailId, Asset, Amount)>,
    pub(crate) config: EngineConfig,
}

impl World {
    pub(crate) fn new(seed: u64, rng: &mut fastrand::Rng) -> World {
        let chains: Vec<Chain> = CHAINS
            .iter()
            .enumerate()
            .map(|(i, (rail, chain))| {
                let block_time_ms = rng.u64(1..=4) * 500;
                let confirmations_final = rng.u32(1..=3);
                let capabilities = Capabilities {
                    rail: name(rail),
                    network: Network::Evm(ChainId(*chain)),
                    fee_asset: Asset::ETH,
                    assets: vec![Asset::ETH, Asset::USDC],
                    amount_min: Amount::new(1),
                    amount_max: Amount::new(10u128.pow(12)),
                    batch_size_max: rng.usize(1..=25),
                    confirmations_final,
                    can_replace: true,
                    finality_expected_ms: u64::from(confirmations_final) * block_time_ms,
                };
                let config = SandboxConfig {
                    capabilities,
                    seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                    block_time_ms,
                    fee: Amount::new(u128::from(rng.u64(500..=2_000))),
                    fee_per_payout: Amount::ZERO,
                    fee_cap: Amount::new(100_000),
                };
                Chain {
                    rail: Arc::new(SandboxRail::new(config, T0)),
                    id: name(rail),
                    network: Network::Evm(ChainId(*chain)),
                    confirmations_final,
                }
            })
            .collect();
        let mut pools = Vec::new();
        let mut funding = Vec::new();
        for chain in &chains {
            for asset in [Asset::USDC, Asset::ETH] {
                // Some pools are short (a shortfall the router must route around), some keep
                // a minimum only urgent payments may dip into.
                let amount = match rng.u8(0..10) {
                    0 => 0,
                    1..=2 => u128::from(rng.u64(1_000..=2_000_000)),
                    _ => 10u128.pow(12),
                };
                let min = if rng.u8(0..4) == 0 { Amount::new(amount / 2) } else { Amount::ZERO };
                pools.push(PoolConfig {
                    rail: chain.id,
                    asset,
                    min,
                    target: Amount::new(10u128.pow(12)),
                    max: Amount::new(10u128.pow(15)),
                });
                if amount > 0 {
                    funding.push((chain.id, asset, Amount::new(amount)));
                }
            }
        }
        let state = StateConfig {
            pools,
            fee_assets: chains.iter().map(|c| (c.id, Asset::ETH)).collect(),
            urgent: vec![name("urgent")],
        };
        let mut queue = QueueConfig::example();
        queue.merchant_limit = queue::Limit { per_second: 1_000, burst: 1_000 };
        queue.rail_limit = queue::Limit { per_second: 1_000, burst: 1_000 };
        let config = EngineConfig {
            state,
            queue,
            weights: Weights::default(),
            rules: vec![],
            breaker: BreakerConfig {
                failures_to_open: 3,
                open_ms: 5_000,
                half_open_probes: 1,
                successes_to_close: 2,
                window: 32,
            },
            anomaly: AnomalyPolicy { stuck_after_ms: 15_000, bump_budget: 2, rebroadcasts_max: 3, attempts_max: 3 },
            journal: journal::Config::default(),
            batch_payments_max: 100,
            reconcile_interval_ms: 0,
            batching: router::BatchPolicy {
                windows_ms: BTreeMap::new(),
                window_default_ms: rng.u64(0..=3) * 500,
                immediate: vec![name("urgent")],
            },
            rail_timeout: Duration::from_secs(5),
            snapshot_every_bytes: rng.u64(1_000..=40_000),
            settlements_per_tick_max: rng.usize(1..=4),
            reconcile_settlements_max: 100,
            reconcile_balances: false,
            unroutable_hold_ms: 30_000,
            quote_refresh_ms: 60_000,
        };
        World { chains, funding, config }
    }

    pub(crate) fn rails(&self) -> Vec<Arc<dyn Rail>> {
        self.chains.iter().map(|c| Arc::clone(&c.rail) as Arc<dyn Rail>).collect()
    }

    pub(crate) fn advance(&self, now: Timestamp) {
        for chain in &self.chains {
            chain.rail.advance_to(now);
        }
    }

    /// What `destination` holds of `asset` over every chain.
    pub(crate) fn received(&self, destination: &Address, asset: Asset) -> u128 {
        let text = destination.to_string();
        self.chains.iter().map(|c| c.rail.balance_of(&text, asset).units()).sum()
    }
}

/// One merchant batch: `count` payments numbered from `first`, each to a destination of its
/// own (so a payment paid twice shows on chain as twice its amount).
/// A payment may name the network of a rail out of the configuration, but never only that
/// one (intake refuses what no configured rail can carry).
pub(crate) fn batch(
    seed: u64,
    first: u64,
    count: u64,
    world: &World,
    removed: Option<usize>,
    rng: &mut fastrand::Rng,
) -> Vec<Draft> {
    let configured: Vec<usize> = (0..world.chains.len()).filter(|c| Some(*c) != removed).collect();
    (first..first + count)
        .map(|i| {
            let mut networks: Vec<Network> = world.chains.iter().filter(|_| rng.bool()).map(|c| c.network).collect();
            if !configured.iter().any(|c| networks.contains(&world.chains[*c].network)) {
                networks.push(world.chains[configured[rng.usize(0..configured.len())]].network);
            }
            Draft {
                reference: format!("sim-{i}"),
                amount: Amount::new(u128::from(rng.u64(1..=200_000))),
                asset: if rng.u8(0..4) == 0 { Asset::ETH } else { Asset::USDC },
                destination: destination(seed, i),
                networks,
                class: name(CLASSES[rng.usize(0..CLASSES.len())]),
                deadline: None,
            }
        })
        .collect()
}

pub(crate) fn destination(seed: u64, i: u64) -> String {
    let hash = blake3::hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat());
    let hex: String = hash.as_bytes()[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}
