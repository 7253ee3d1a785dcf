//! railyard's configuration file (TOML), with environment overrides, turned into the engine's
//! configuration and its rails. Every error names the exact key to fix.
//!
//! Overrides: `RAILYARD__<key path>=<value>`, path segments separated by `__`, array elements by
//! index: `RAILYARD__QUEUE__CAPACITY=5000`, `RAILYARD__RAILS__0__BLOCK_TIME_MS=500`. The value is
//! read as TOML when it parses as TOML, else as a string.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use model::{Amount, Asset, Capabilities, ClassName, MerchantId, Network, RailId, Timestamp};
use queue::{ClassConfig, Limit, QueueConfig};
use rails::Rail;
use rails::btc::{BitcoinConfig, BitcoinRail, RpcAuth, WalletKey};
use rails::evm::{EvmConfig, EvmRail, SecretKey, Stablecoin, tokens_for};
use rails::sandbox::{SandboxConfig, SandboxRail};
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};
use serde::Deserialize;

use engine::{EngineConfig, StateConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub data_dir: PathBuf,
    pub tick_ms: u64,
    pub batch_payments_max: usize,
    /// How often to reconcile with the chains (0: only on demand).
    #[serde(default)]
    pub reconcile_interval_ms: u64,
    /// Whether reconciliation also checks destination balances against all that was settled
    /// to them (only meaningful where destinations never spend; see `EngineConfig`).
    #[serde(default)]
    pub reconcile_balances: bool,
    /// How long a payment no rail can take waits before it is held with the reasons.
    #[serde(default = "unroutable_hold_default")]
    pub unroutable_hold_ms: u64,
    /// How often an idle rail's fees are quoted again for the router (0: never).
    #[serde(default = "quote_refresh_default")]
    pub quote_refresh_ms: u64,
    pub classes: Vec<ClassFile>,
    pub urgent: Vec<String>,
    pub queue: QueueFile,
    #[serde(default)]
    pub stablecoins: Vec<Stablecoin>,
    pub rails: Vec<RailFile>,
    pub pools: Vec<PoolFile>,
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    #[serde(default)]
    pub anomaly: Option<AnomalyPolicy>,
    #[serde(default)]
    pub api: ApiFile,
}

/// The HTTP API: where it listens and its limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiFile {
    /// `host:port`; port 0 picks a free port (printed at start).
    pub listen: String,
    /// The largest request body: larger is a 413.
    pub body_bytes_max: usize,
    /// Requests per second per API key (GCRA) and the burst above it: past it, a 429.
    pub requests_per_second: u32,
    pub requests_burst: u32,
}

impl Default for ApiFile {
    fn default() -> ApiFile {
        ApiFile {
            listen: "127.0.0.1:8080".into(),
            body_bytes_max: 8 << 20,
            requests_per_second: 50,
            requests_burst: 200,
        }
    }
}

/// The API settings, checked.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub listen: std::net::SocketAddr,
    pub body_bytes_max: usize,
    pub requests_per_second: u32,
    pub requests_burst: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFile {
    pub name: String,
    pub weight: u32,
    pub deadline_default_ms: u64,
    pub age_max_ms: Option<u64>,
    /// How long a payment of this class may wait for others to share its settlement (urgent
    /// classes never wait).
    #[serde(default = "batch_window_default")]
    pub batch_window_ms: u64,
}

fn quote_refresh_default() -> u64 {
    60_000
}

fn unroutable_hold_default() -> u64 {
    600_000
}

fn batch_window_default() -> u64 {
    2_000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueFile {
    pub capacity: usize,
    pub capacity_per_merchant: usize,
    pub scan_max: usize,
    pub merchant_limit: Limit,
    pub rail_limit: Limit,
}

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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolFile {
    pub rail: String,
    pub asset: String,
    pub min: String,
    pub target: String,
    pub max: String,
    /// Sandbox rails only: the deposit made at start (journaled once).
    #[serde(default)]
    pub fund: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("config {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

fn error(key: impl Into<String>, problem: impl ToString) -> ConfigError {
    ConfigError { key: key.into(), problem: problem.to_string() }
}

/// Parses `text`, applies `overrides` (`RAILYARD__...` pairs) and deserializes.
pub fn parse(text: &str, overrides: &[(String, String)]) -> Result<File, ConfigError> {
    let mut value: toml::Value =
        toml::from_str(text).map_err(|e| error("(file)", e.to_string().trim().replace('\n', " ")))?;
    for (name, raw) in overrides {
        let Some(path) = name.strip_prefix("RAILYARD__") else { continue };
        let segments: Vec<String> = path.split("__").map(str::to_lowercase).collect();
        apply_override(&mut value, &segments, raw).map_err(|problem| error(segments.join("."), problem))?;
    }
    serde_path_to_error::deserialize(value).map_err(|e| error(e.path().to_string(), e.inner().to_string()))
}

/// The override's value: a quoted value is a string; a value replacing a string stays a
/// string (so amounts, which the file writes as strings for exactness, take plain numbers:
/// `RAILYARD__POOLS__0__FUND=50000`); anything else is read as TOML when it parses, else as a
/// string.
fn override_value(raw: &str, replaces: Option<&toml::Value>) -> toml::Value {
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v"));
    match (parsed, replaces) {
        (Some(value @ toml::Value::String(_)), _) => value,
        (_, Some(toml::Value::String(_))) => toml::Value::String(raw.to_owned()),
        (Some(value), _) => value,
        (None, _) => toml::Value::String(raw.to_owned()),
    }
}

fn apply_override(value: &mut toml::Value, path: &[String], raw: &str) -> Result<(), String> {
    let mut at = value;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        at = match at {
            toml::Value::Table(table) => {
                if last {
                    let new = override_value(raw, table.get(segment));
                    table.insert(segment.clone(), new);
                    return Ok(());
                }
                table.get_mut(segment).ok_or_else(|| "no such key to override".to_owned())?
            }
            toml::Value::Array(items) => {
                let index: usize = segment.parse().map_err(|_| "an array needs a numeric index".to_owned())?;
                let item = items.get_mut(index).ok_or_else(|| "index out of range".to_owned())?;
                if last {
                    *item = override_value(raw, Some(item));
                    return Ok(());
                }
                item
            }
            _ => return Err("cannot override inside a plain value".into()),
        };
    }
    Err("empty override path".into())
}

fn name(key: &str, text: &str) -> Result<ClassName, ConfigError> {
    model::Name::new(text).map_err(|e| error(key, e))
}

/// The assets the configuration knows: the built-in ones and the stablecoin registry.
fn assets(file: &File) -> Result<BTreeMap<String, Asset>, ConfigError> {
    let mut known: BTreeMap<String, Asset> =
        [Asset::BTC, Asset::ETH, Asset::USDC, Asset::USDT].into_iter().map(|a| (a.symbol().to_owned(), a)).collect();
    for (i, coin) in file.stablecoins.iter().enumerate() {
        let asset = Asset::new(&coin.symbol, coin.decimals).map_err(|e| error(format!("stablecoins[{i}]"), e))?;
        if known.get(&coin.symbol).is_some_and(|a| *a != asset) {
            return Err(error(
                format!("stablecoins[{i}].decimals"),
                format!("{} is known with other decimals", coin.symbol),
            ));
        }
        known.insert(coin.symbol.clone(), asset);
    }
    Ok(known)
}

fn amount(key: &str, asset: Asset, text: &str) -> Result<Amount, ConfigError> {
    asset.parse_amount(text).map_err(|e| error(key, e))
}

/// A rail to build: sandbox rails are built at once, EVM rails connect when the engine starts.
#[derive(Clone, Debug)]
pub enum RailSpec {
    Sandbox(SandboxConfig),
    Evm { config: EvmConfig, key_env: String },
    Bitcoin { config: BitcoinConfig, key_env: String },
}

/// Everything a validated configuration file yields.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub engine: EngineConfig,
    pub rails: Vec<RailSpec>,
    /// Deposits to journal at start (sandbox pools), by (rail, asset).
    pub funding: Vec<(RailId, Asset, Amount)>,
    pub api: ApiSettings,
}

/// Validates the whole file and turns it into the engine's configuration.
pub fn load(file: &File) -> Result<Loaded, ConfigError> {
    let known = assets(file)?;
    let asset = |key: &str, symbol: &str| {
        known.get(symbol).copied().ok_or_else(|| error(key, format!("unknown asset {symbol}")))
    };
    let classes = file
        .classes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(ClassConfig {
                name: name(&format!("classes[{i}].name"), &c.name)?,
                weight: c.weight,
                deadline_default_ms: c.deadline_default_ms,
                age_max_ms: c.age_max_ms,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let queue = QueueConfig {
        classes,
        capacity: file.queue.capacity,
        capacity_per_merchant: file.queue.capacity_per_merchant,
        merchant_limit: file.queue.merchant_limit,
        merchant_limits: BTreeMap::<MerchantId, Limit>::new(),
        rail_limit: file.queue.rail_limit,
        rail_limits: BTreeMap::new(),
        scan_max: file.queue.scan_max,
    };
    queue.validate().map_err(|e| {
        // The queue names its own keys; in the file, all but the classes sit under [queue].
        let key = if e.key.starts_with("classes") { e.key } else { format!("queue.{}", e.key) };
        error(key, e.problem)
    })?;
    let urgent =
        file.urgent.iter().enumerate().map(|(i, u)| name(&format!("urgent[{i}]"), u)).collect::<Result<Vec<_>, _>>()?;
    let urgent_names = urgent.clone();
    if file.tick_ms == 0 {
        return Err(error("tick_ms", "must be greater than zero"));
    }
    let mut rails = Vec::new();
    let mut fee_assets = BTreeMap::new();
    for (i, rail) in file.rails.iter().enumerate() {
        let key = |field: &str| format!("rails[{i}].{field}");
        let spec = rail_spec(rail, &key, &asset, file)?;
        let (rail_name, fee_asset) = match &spec {
            RailSpec::Sandbox(c) => (c.capabilities.rail, c.capabilities.fee_asset),
            RailSpec::Evm { config, .. } => (config.rail, Asset::ETH),
            RailSpec::Bitcoin { config, .. } => (config.rail, Asset::BTC),
        };
        if fee_assets.insert(rail_name, fee_asset).is_some() {
            return Err(error(key("name"), format!("rail {rail_name} is configured twice")));
        }
        rails.push(spec);
    }
    if rails.is_empty() {
        return Err(error("rails", "at least one rail is required"));
    }
    let mut pools = Vec::new();
    let mut funding = Vec::new();
    for (i, pool) in file.pools.iter().enumerate() {
        let key = |field: &str| format!("pools[{i}].{field}");
        let rail = name(&key("rail"), &pool.rail)?;
        if !fee_assets.contains_key(&rail) {
            return Err(error(key("rail"), format!("no rail named {rail}")));
        }
        let a = asset(&key("asset"), &pool.asset)?;
        let config = PoolConfig {
            rail,
            asset: a,
            min: amount(&key("min"), a, &pool.min)?,
            target: amount(&key("target"), a, &pool.target)?,
            max: amount(&key("max"), a, &pool.max)?,
        };
        if !(config.min <= config.target && config.target <= config.max) {
            return Err(error(key("target"), "min <= target <= max is required"));
        }
        if let Some(fund) = &pool.fund {
            funding.push((rail, a, amount(&key("fund"), a, fund)?));
        }
        pools.push(config);
    }
    let engine = EngineConfig {
        state: StateConfig { pools, fee_assets, urgent },
        queue,
        weights: Weights::default(),
        rules: Vec::new(),
        breaker: file.breaker.unwrap_or_default(),
        anomaly: file.anomaly.unwrap_or_default(),
        journal: journal::Config::default(),
        batch_payments_max: file.batch_payments_max,
        reconcile_interval_ms: file.reconcile_interval_ms,
        batching: router::BatchPolicy {
            windows_ms: file
                .classes
                .iter()
                .filter_map(|c| model::Name::new(&c.name).ok().map(|n| (n, c.batch_window_ms)))
                .collect(),
            window_default_ms: batch_window_default(),
            immediate: urgent_names.clone(),
        },
        rail_timeout: Duration::from_secs(10),
        snapshot_every_records: 100_000,
        settlements_per_tick_max: 4,
        reconcile_settlements_max: 1_000,
        reconcile_balances: file.reconcile_balances,
        unroutable_hold_ms: file.unroutable_hold_ms,
        quote_refresh_ms: file.quote_refresh_ms,
    };
    engine.validate().map_err(|e| error("batch_payments_max", e.to_string()))?;
    let listen = file.api.listen.parse().map_err(|_| {
        error("api.listen", format!("{:?} is not host:port (for example 127.0.0.1:8080)", file.api.listen))
    })?;
    if file.api.body_bytes_max < 1024 || file.api.requests_per_second == 0 || file.api.requests_burst == 0 {
        return Err(error(
            "api",
            "body_bytes_max is at least 1024; requests_per_second and requests_burst at least 1".to_owned(),
        ));
    }
    let api = ApiSettings {
        listen,
        body_bytes_max: file.api.body_bytes_max,
        requests_per_second: file.api.requests_per_second,
        requests_burst: file.api.requests_burst,
    };
    Ok(Loaded {
        data_dir: file.data_dir.clone(),
        tick: Duration::from_millis(file.tick_ms),
        engine,
        rails,
        funding,
        api,
    })
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

fn rail_spec(
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
