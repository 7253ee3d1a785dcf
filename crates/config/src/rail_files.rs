//! The `[[rails]]` of the configuration file: what each kind takes, its validation (every
//! error names its key), and building the rails it describes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::{Amount, Asset, Capabilities, Network, Timestamp};
use rails::Rail;
use rails::btc::{BitcoinConfig, BitcoinRail, RpcAuth, WalletKey};
use rails::evm::{EvmConfig, EvmRail, SecretKey, tokens_for};
use rails::sandbox::{SandboxConfig, SandboxRail};
use serde::Deserialize;

use crate::{ConfigError, File, amount, error, name};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum RailFile {
    Sandbox {
        name: String,
        network: String,
        assets: Vec<String>,
        block_time_ms: u64,
        confirmations_final: u32,
        batch_size_max: usize,
        fee: String,
        /// Added to `fee` for each payout a settlement carries (default none).
        #[serde(default = "zero")]
        fee_per_payout: String,
        fee_cap: String,
        seed: u64,
    },
    Evm {
        name: String,
        chain_id: u64,
        rpc_url: String,
        batch_contract: String,
        key_env: String,
        confirmations_final: u32,
        batch_size_max: usize,
        fee_cap_eth: String,
        max_fee_per_gas_gwei: u64,
        priority_fee_gwei: u64,
    },
    /// Bitcoin L1 through Bitcoin Core's JSON-RPC, from a BDK hot wallet.
    Bitcoin {
        name: String,
        /// `bitcoin`, `bitcoin-testnet`, `bitcoin-signet` or `bitcoin-regtest`.
        network: String,
        rpc_url: String,
        /// Core's `.cookie` file; or `rpc_user` with the password in `rpc_password_env`.
        #[serde(default)]
        rpc_cookie_file: Option<PathBuf>,
        #[serde(default)]
        rpc_user: Option<String>,
        #[serde(default)]
        rpc_password_env: Option<String>,
        /// The environment variable holding the hot wallet's extended private key.
        key_env: String,
        confirmations_final: u32,
        batch_size_max: usize,
        /// The smallest payout, in BTC (at least the dust threshold, 0.00000546).
        #[serde(default = "btc_amount_min")]
        amount_min: String,
        /// The highest fee rate offered (estimates above it are capped), in sat/vB.
        fee_rate_max_sat_vb: u64,
        /// The fee rate used while the node has no estimate, in sat/vB.
        #[serde(default = "fee_rate_fallback")]
        fee_rate_fallback_sat_vb: u64,
        /// The most one settlement may cost, in BTC.
        fee_cap: String,
        /// The confirmation target, in blocks, of a batch without a deadline.
        #[serde(default = "target_blocks")]
        target_blocks: u16,
        /// The first block the wallet reads: the height the key was made at (default 0).
        #[serde(default)]
        birth_height: u32,
    },
}

fn btc_amount_min() -> String {
    "0.00000546".into()
}

fn fee_rate_fallback() -> u64 {
    2
}

fn target_blocks() -> u16 {
    6
}

/// A rail to build: sandbox rails are built at once, EVM rails connect when the engine starts.
#[derive(Clone, Debug)]
pub enum RailSpec {
    Sandbox(SandboxConfig),
    Evm { config: EvmConfig, key_env: String },
    Bitcoin { config: BitcoinConfig, key_env: String },
}

/// Finality needs at least one confirmation: 0 would call a settlement final the moment it is
/// seen, before any block holds it.
fn final_depth(key: &dyn Fn(&str) -> String, confirmations_final: u32) -> Result<(), ConfigError> {
    if confirmations_final == 0 {
        return Err(error(
            key("confirmations_final"),
            "must be at least 1 (a block must hold a settlement before it is final)",
        ));
    }
    Ok(())
}

fn zero() -> String {
    "0".into()
}

pub(crate) fn rail_spec(
    rail: &RailFile,
    key: &dyn Fn(&str) -> String,
    asset: &dyn Fn(&str, &str) -> Result<Asset, ConfigError>,
    file: &File,
) -> Result<RailSpec, ConfigError> {
    match rail {
        RailFile::Sandbox {
            name: n,
            network,
            assets,
            block_time_ms,
            confirmations_final,
            batch_size_max,
            fee,
            fee_per_payout,
            fee_cap,
            seed,
        } => {
            let network: Network = network.parse().map_err(|e| error(key("network"), e))?;
            let assets = assets
                .iter()
                .enumerate()
                .map(|(j, a)| asset(&key(&format!("assets[{j}]")), a))
                .collect::<Result<Vec<_>, _>>()?;
            if *block_time_ms == 0 || *batch_size_max == 0 {
                return Err(error(key("block_time_ms"), "block_time_ms and batch_size_max must be greater than zero"));
            }
            final_depth(key, *confirmations_final)?;
            // A sandbox chain on a Bitcoin network pays its fees in BTC and carries nothing
            // below the dust threshold, as the Bitcoin rail does.
            let (fee_asset, amount_min) = match network {
                Network::Bitcoin(_) => (Asset::BTC, Amount::new(rails::btc::DUST_MAX_SATS)),
                Network::Evm(_) => (Asset::ETH, Amount::new(1)),
            };
            let capabilities = Capabilities {
                rail: name(&key("name"), n)?,
                network,
                fee_asset,
                assets,
                amount_min,
                amount_max: Amount::new(10u128.pow(30)),
                batch_size_max: *batch_size_max,
                confirmations_final: *confirmations_final,
                can_replace: true,
                finality_expected_ms: block_time_ms * u64::from(*confirmations_final),
            };
            Ok(RailSpec::Sandbox(SandboxConfig {
                capabilities,
                seed: *seed,
                block_time_ms: *block_time_ms,
                fee: amount(&key("fee"), fee_asset, fee)?,
                fee_per_payout: amount(&key("fee_per_payout"), fee_asset, fee_per_payout)?,
                fee_cap: amount(&key("fee_cap"), fee_asset, fee_cap)?,
            }))
        }
        RailFile::Evm {
            name: n,
            chain_id,
            rpc_url,
            batch_contract,
            key_env,
            confirmations_final,
            batch_size_max,
            fee_cap_eth,
            max_fee_per_gas_gwei,
            priority_fee_gwei,
        } => {
            final_depth(key, *confirmations_final)?;
            let network = Network::Evm(model::ChainId(*chain_id));
            let contract = match model::Address::parse(batch_contract, network) {
                Ok(model::Address::Evm(bytes)) => bytes,
                Ok(_) => return Err(error(key("batch_contract"), "must be an EVM address")),
                Err(e) => return Err(error(key("batch_contract"), e)),
            };
            let tokens = tokens_for(&file.stablecoins, network).map_err(|e| error("stablecoins", e))?;
            let config = EvmConfig {
                rail: name(&key("name"), n)?,
                chain_id: *chain_id,
                rpc_url: rpc_url.clone(),
                batch_contract: contract,
                tokens,
                confirmations_final: *confirmations_final,
                batch_size_max: *batch_size_max,
                amount_min: Amount::new(1),
                amount_max: Amount::new(10u128.pow(30)),
                finality_expected_ms: 12_000 * u64::from(*confirmations_final),
                fee_cap_wei: amount(&key("fee_cap_eth"), Asset::ETH, fee_cap_eth)?.units(),
                max_fee_per_gas_cap: u128::from(*max_fee_per_gas_gwei) * 1_000_000_000,
                priority_fee_per_gas: u128::from(*priority_fee_gwei) * 1_000_000_000,
                gas_margin_percent: 25,
                request_timeout: Duration::from_secs(10),
                nonce_search_blocks: 128,
            };
            Ok(RailSpec::Evm { config, key_env: key_env.clone() })
        }
        RailFile::Bitcoin {
            name: n,
            network,
            rpc_url,
            rpc_cookie_file,
            rpc_user,
            rpc_password_env,
            key_env,
            confirmations_final,
            batch_size_max,
            amount_min,
            fee_rate_max_sat_vb,
            fee_rate_fallback_sat_vb,
            fee_cap,
            target_blocks,
            birth_height,
        } => {
            final_depth(key, *confirmations_final)?;
            let Ok(Network::Bitcoin(network)) = network.parse::<Network>() else {
                return Err(error(
                    key("network"),
                    "must be bitcoin, bitcoin-testnet, bitcoin-signet or bitcoin-regtest",
                ));
            };
            let auth = match (rpc_cookie_file, rpc_user, rpc_password_env) {
                (Some(path), None, None) => RpcAuth::Cookie(path.clone()),
                (None, Some(user), Some(env)) => {
                    let password = std::env::var(env).map_err(|_| {
                        error(key("rpc_password_env"), format!("environment variable {env} holds no password"))
                    })?;
                    RpcAuth::Password { user: user.clone(), password: password.into() }
                }
                _ => {
                    return Err(error(
                        key("rpc_cookie_file"),
                        "give either rpc_cookie_file, or rpc_user and rpc_password_env",
                    ));
                }
            };
            let amount_min = amount(&key("amount_min"), Asset::BTC, amount_min)?;
            if amount_min.units() < rails::btc::DUST_MAX_SATS {
                return Err(error(key("amount_min"), "must be at least 0.00000546 (the dust threshold)"));
            }
            if *fee_rate_max_sat_vb == 0 || *fee_rate_fallback_sat_vb == 0 || *batch_size_max == 0 {
                return Err(error(key("fee_rate_max_sat_vb"), "fee rates and batch_size_max must be at least 1"));
            }
            let fee_cap = amount(&key("fee_cap"), Asset::BTC, fee_cap)?;
            let config = BitcoinConfig {
                rail: name(&key("name"), n)?,
                network,
                rpc_url: rpc_url.clone(),
                auth,
                confirmations_final: *confirmations_final,
                batch_size_max: *batch_size_max,
                amount_min,
                amount_max: Amount::new(21_000_000 * 100_000_000),
                finality_expected_ms: 600_000 * u64::from(*confirmations_final),
                fee_rate_max_sat_vb: *fee_rate_max_sat_vb,
                fee_rate_fallback_sat_vb: *fee_rate_fallback_sat_vb,
                fee_cap_sats: u64::try_from(fee_cap.units()).map_err(|_| error(key("fee_cap"), "too large"))?,
                target_blocks_default: *target_blocks,
                request_timeout: Duration::from_secs(10),
                birth_height: *birth_height,
            };
            Ok(RailSpec::Bitcoin { config, key_env: key_env.clone() })
        }
    }
}

/// The rails, and the sandbox chains among them (whose clock the caller drives).
#[derive(Debug)]
pub struct BuiltRails {
    pub rails: Vec<Arc<dyn Rail>>,
    pub sandboxes: Vec<Arc<SandboxRail>>,
}

/// Builds the rails: sandbox chains in process, EVM rails connected to their nodes.
pub async fn build_rails(specs: &[RailSpec], now: Timestamp) -> Result<BuiltRails, ConfigError> {
    let mut rails: Vec<Arc<dyn Rail>> = Vec::new();
    let mut sandboxes = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        match spec {
            RailSpec::Sandbox(config) => {
                let sandbox = Arc::new(SandboxRail::new(config.clone(), now));
                sandboxes.push(Arc::clone(&sandbox));
                rails.push(sandbox);
            }
            RailSpec::Evm { config, key_env } => {
                let key = SecretKey::from_env(key_env).map_err(|e| error(format!("rails[{i}].key_env"), e))?;
                let rail = EvmRail::new(config.clone(), &key).map_err(|e| error(format!("rails[{i}]"), e))?;
                // A node on another chain is bad configuration; a node that does not answer is
                // an outage: the rail starts unavailable (its breaker open) and the rest serve.
                match rail.ensure_connected().await {
                    Ok(()) => {}
                    Err(e @ rails::RailError::Config(_)) => return Err(error(format!("rails[{i}]"), e)),
                    Err(e) => tracing::warn!(rail = %config.rail, error = %e, "node unreachable at start"),
                }
                rails.push(Arc::new(rail));
            }
            RailSpec::Bitcoin { config, key_env } => {
                let key = WalletKey::from_env(key_env).map_err(|e| error(format!("rails[{i}].key_env"), e))?;
                // The wallet syncs on first use: a node that is down makes this rail
                // unavailable (its breaker opens), not the service.
                let rail = BitcoinRail::new(config.clone(), &key).map_err(|e| error(format!("rails[{i}]"), e))?;
                rails.push(Arc::new(rail));
            }
        }
    }
    Ok(BuiltRails { rails, sandboxes })
}
