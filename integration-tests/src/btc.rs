//! The Bitcoin kill test's shared world: a regtest node (in the test process, its RPC on
//! 127.0.0.1), the engine configuration over one Bitcoin rail, and the fixed batch of BTC
//! payouts the driver submits.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{Draft, EngineConfig};
use model::{Amount, Asset, BitcoinNetwork, Name, Network};
use rails::btc::{BitcoinConfig, RpcAuth};
use router::PoolConfig;
use serde::{Deserialize, Serialize};

use crate::kill::{Chains, engine_config};

/// What the test tells the driver about the node it serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BtcSetup {
    pub rpc_url: String,
    pub user: String,
    pub password: String,
    /// The hot wallet's tprv.
    pub wallet_key: String,
    pub payments: u64,
}

pub const RAIL: &str = "btc";

pub fn btc_config(setup: &BtcSetup) -> BitcoinConfig {
    BitcoinConfig {
        rail: Name::new(RAIL).expect("valid name"),
        network: BitcoinNetwork::Regtest,
        rpc_url: setup.rpc_url.clone(),
        auth: RpcAuth::Password { user: setup.user.clone(), password: setup.password.clone().into() },
        confirmations_final: 2,
        batch_size_max: 50,
        amount_min: Amount::new(546),
        amount_max: Amount::new(2_100_000_000_000_000),
        finality_expected_ms: 3_000,
        fee_rate_max_sat_vb: 50,
        fee_rate_fallback_sat_vb: 2,
        fee_cap_sats: 1_000_000,
        target_blocks_default: 6,
        birth_height: 0,
        request_timeout: Duration::from_secs(10),
    }
}

/// The EVM kill test's engine configuration with one BTC pool on the Bitcoin rail, whose fees
/// are paid in BTC.
pub fn btc_engine_config() -> EngineConfig {
    let mut config = engine_config(&Chains { chains: Vec::new(), hot_key: String::new(), batches: 0 });
    let rail = Name::new(RAIL).expect("valid name");
    config.state.pools =
        vec![PoolConfig { rail, asset: Asset::BTC, min: Amount::ZERO, target: Amount::new(1), max: Amount::MAX }];
    config.state.fee_assets = BTreeMap::from([(rail, Asset::BTC)]);
    config
}

/// Payout `i`'s address (P2WPKH of a hash: nobody holds its key) and amount.
pub fn btc_payout(i: u64) -> (String, Amount) {
    let hash = blake3::hash(&(i + 91_000).to_le_bytes());
    let program = bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &hash.as_bytes()[..20])
        .expect("a 20-byte v0 program");
    let address = bitcoin::Address::from_witness_program(program, bitcoin::Network::Regtest);
    (address.to_string(), Amount::new(100_000 + u128::from(i) * 1_000))
}

pub fn btc_batch(payments: u64) -> Vec<Draft> {
    let classes = ["urgent", "standard", "bulk"];
    (0..payments)
        .map(|i| {
            let (destination, amount) = btc_payout(i);
            Draft {
                reference: format!("btc-{i}"),
                amount,
                asset: Asset::BTC,
                destination,
                networks: vec![Network::Bitcoin(BitcoinNetwork::Regtest)],
                class: Name::new(classes[(i % 3) as usize]).expect("valid class"),
                deadline: None,
            }
        })
        .collect()
}
