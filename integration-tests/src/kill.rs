//! The engine kill test's shared world: two EVM chains (anvil) standing for L1 and L2, the
//! engine configuration over them, and the fixed batches the driver submits.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{Draft, EngineConfig, StateConfig};
use model::{Amount, Asset, ChainId, ClassName, Name, Network, RailId};
use queue::QueueConfig;
use rails::evm::{EvmConfig, Token};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};
use serde::{Deserialize, Serialize};

/// What the test tells the driver about the chains it started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chains {
    pub chains: Vec<ChainSetup>,
    pub hot_key: String,
    /// Batches of `PER_BATCH` payments the driver submits (more kills want more work).
    pub batches: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainSetup {
    pub rail: String,
    pub chain_id: u64,
    pub url: String,
    pub batch_contract: [u8; 20],
    pub token: [u8; 20],
}

/// Payments wait up to this long for company in a settlement.
const BATCH_WINDOW_MS: u64 = 1_500;

pub const PER_BATCH: u64 = 25;

fn name(text: &str) -> Name {
    Name::new(text).expect("valid name")
}

pub fn evm_config(chain: &ChainSetup) -> EvmConfig {
    EvmConfig {
        rail: name(&chain.rail),
        chain_id: chain.chain_id,
        rpc_url: chain.url.clone(),
        batch_contract: chain.batch_contract,
        tokens: vec![Token { asset: Asset::USDC, address: chain.token }],
        confirmations_final: 2,
        batch_size_max: 10,
        amount_min: Amount::new(1),
        amount_max: Amount::new(10u128.pow(24)),
        finality_expected_ms: 3_000,
        fee_cap_wei: 10u128.pow(18),
        max_fee_per_gas_cap: 500_000_000_000,
        priority_fee_per_gas: 1_000_000_000,
        gas_margin_percent: 30,
        request_timeout: Duration::from_secs(10),
        nonce_search_blocks: 128,
    }
}

pub fn engine_config(chains: &Chains) -> EngineConfig {
    let rails: Vec<RailId> = chains.chains.iter().map(|c| name(&c.rail)).collect();
    let pools = rails
        .iter()
        .flat_map(|r| {
            [Asset::USDC, Asset::ETH].map(|asset| PoolConfig {
                rail: *r,
                asset,
                min: Amount::ZERO,
                target: Amount::new(1),
                max: Amount::MAX,
            })
        })
        .collect();
    let state = StateConfig {
        pools,
        fee_assets: rails.iter().map(|r| (*r, Asset::ETH)).collect(),
        urgent: vec![name("urgent")],
    };
    let mut queue = QueueConfig::example();
    queue.merchant_limit = queue::Limit { per_second: 1_000, burst: 1_000 };
    // Slow enough that the settling spans many kills.
    queue.rail_limit = queue::Limit { per_second: 6, burst: 10 };
    EngineConfig {
        state,
        queue,
        weights: Weights::default(),
        rules: vec![],
        breaker: BreakerConfig {
            failures_to_open: 5,
            open_ms: 2_000,
            half_open_probes: 1,
            successes_to_close: 1,
            window: 32,
        },
        anomaly: AnomalyPolicy { stuck_after_ms: 15_000, bump_budget: 3, rebroadcasts_max: 50, attempts_max: 3 },
        journal: journal::Config::default(),
        batch_payments_max: 1_000,
        reconcile_interval_ms: 0,
        batching: router::BatchPolicy {
            windows_ms: BTreeMap::new(),
            window_default_ms: BATCH_WINDOW_MS,
            immediate: vec![name("urgent")],
        },
        rail_timeout: std::time::Duration::from_secs(10),
        snapshot_every_bytes: 8 << 20,
        settlements_per_tick_max: 1,
        reconcile_settlements_max: 1_000,
        reconcile_balances: false,
        unroutable_hold_ms: 600_000,
        quote_refresh_ms: 60_000,
    }
}

/// A fresh recipient for payment `i` (lowercase hex: no checksum to get wrong).
pub fn recipient(i: u64) -> [u8; 20] {
    let hash = blake3::hash(&(i + 77_000).to_le_bytes());
    hash.as_bytes()[..20].try_into().expect("20 bytes")
}

pub fn amount(i: u64) -> (Asset, Amount) {
    if i.is_multiple_of(2) {
        (Asset::ETH, Amount::new(10u128.pow(15) + u128::from(i)))
    } else {
        (Asset::USDC, Amount::new(1_000_000 + u128::from(i)))
    }
}

/// Batch `b`'s payments: alternating ETH and the stablecoin, allowed on both chains.
pub fn batch(b: u64, chains: &Chains) -> Vec<Draft> {
    let networks: Vec<Network> = chains.chains.iter().map(|c| Network::Evm(ChainId(c.chain_id))).collect();
    let classes: [ClassName; 3] = [name("urgent"), name("standard"), name("bulk")];
    (b * PER_BATCH..(b + 1) * PER_BATCH)
        .map(|i| {
            let (asset, amount) = amount(i);
            let hex: String = recipient(i).iter().map(|byte| format!("{byte:02x}")).collect();
            Draft {
                reference: format!("kill-{i}"),
                amount,
                asset,
                destination: format!("0x{hex}"),
                networks: networks.clone(),
                class: classes[(i % 3) as usize],
                deadline: None,
            }
        })
        .collect()
}

/// Totals the driver's batches owe each recipient, for the final check.
pub fn owed(batches: u64) -> BTreeMap<[u8; 20], (Asset, Amount)> {
    (0..batches * PER_BATCH).map(|i| (recipient(i), amount(i))).collect()
}
