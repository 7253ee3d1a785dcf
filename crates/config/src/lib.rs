//! railyard's configuration file (TOML), with environment overrides, turned into the engine's
//! configuration and its rails. Every error names the exact key to fix.
//!
//! Overrides: `RAILYARD__<key path>=<value>`, path segments separated by `__`, array elements by
//! index: `RAILYARD__QUEUE__CAPACITY=5000`, `RAILYARD__RAILS__0__BLOCK_TIME_MS=500`. The value is
//! read as TOML when it parses as TOML, else as a string.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use model::{Amount, Asset, ClassName, MerchantId, RailId};
use queue::{ClassConfig, Limit, QueueConfig};
use rails::evm::Stablecoin;
use router::{AnomalyPolicy, BreakerConfig, PoolConfig, Weights};
use serde::Deserialize;

mod rail_files;

use rail_files::rail_spec;
pub use rail_files::{BuiltRails, RailFile, RailSpec, build_rails};

use engine::{EngineConfig, StateConfig};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub data_dir: PathBuf,
    /// MiB of the redb journal file that redb caches in memory (the operating system's page
    /// cache sits behind it; more mostly speeds history reads). Not used on PostgreSQL.
    #[serde(default = "journal_cache_mib_default")]
    pub journal_cache_mib: u64,
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
    #[serde(default)]
    pub journal: JournalFile,
}

/// Where the journal is kept (`[journal]`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum JournalFile {
    /// The embedded redb file `journal.redb` in `data_dir` (the default).
    #[default]
    Redb,
    /// A PostgreSQL database, its `postgres://` URL read from the environment variable
    /// `url_env` (a URL may hold a password). The schema is created and migrated at start.
    /// Several nodes may share it: the work leases (the coordinator's and one per chain)
    /// spread over them, each renewed every quarter of `lease_ttl_ms`; every node follows the
    /// journal, and forwards commands to the coordinator at the `advertise_url` it registered
    /// (default `http://<api.listen>`).
    Postgres {
        url_env: String,
        #[serde(default = "lease_ttl_default")]
        lease_ttl_ms: u64,
        #[serde(default)]
        advertise_url: Option<String>,
        /// Connections serving queries on a node (history lookups from API requests).
        #[serde(default = "pool_size_default")]
        pool_size: usize,
    },
}

fn journal_cache_mib_default() -> u64 {
    u64::try_from(journal::Config::default().cache_bytes >> 20).unwrap_or(4)
}

/// The largest redb cache `journal_cache_mib` may ask for.
const JOURNAL_CACHE_MIB_MAX: u64 = 64 << 10;

fn pool_size_default() -> usize {
    4
}

fn lease_ttl_default() -> u64 {
    5_000
}

/// The journal a configuration names, resolved.
#[derive(Clone, PartialEq, Eq)]
pub enum JournalSpec {
    Redb,
    Postgres { url: String, lease_ttl: Duration, advertise_url: Option<String>, pool_size: usize },
}

impl std::fmt::Debug for JournalSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalSpec::Redb => f.write_str("Redb"),
            // Only where it points: the URL may hold a password.
            JournalSpec::Postgres { url, .. } => write!(f, "Postgres({})", url.rsplit('@').next().unwrap_or("")),
        }
    }
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
    pub journal: JournalSpec,
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
    if !(1..=JOURNAL_CACHE_MIB_MAX).contains(&file.journal_cache_mib) {
        let problem = format!("1 to {JOURNAL_CACHE_MIB_MAX} MiB of the redb file cached in memory");
        return Err(error("journal_cache_mib", problem));
    }
    let journal_config = journal::Config {
        cache_bytes: usize::try_from(file.journal_cache_mib << 20)
            .map_err(|_| error("journal_cache_mib", "more than this machine can address"))?,
        ..journal::Config::default()
    };
    let engine = EngineConfig {
        state: StateConfig { pools, fee_assets, urgent },
        queue,
        weights: Weights::default(),
        rules: Vec::new(),
        breaker: file.breaker.unwrap_or_default(),
        anomaly: file.anomaly.unwrap_or_default(),
        journal: journal_config,
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
        snapshot_every_bytes: 16 << 20,
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
    let journal = match &file.journal {
        JournalFile::Redb => JournalSpec::Redb,
        JournalFile::Postgres { url_env, lease_ttl_ms, advertise_url, pool_size } => {
            if !(1..=64).contains(pool_size) {
                return Err(error("journal.pool_size", "1 to 64 connections"));
            }
            if !(300..=600_000).contains(lease_ttl_ms) {
                return Err(error(
                    "journal.lease_ttl_ms",
                    "a lease lasts between 300 ms and 10 minutes: long enough to be renewed four times over a slow database, short enough that a dead node's rails wait little",
                ));
            }
            if let Some(advertised) = advertise_url
                && !(advertised.starts_with("http://") || advertised.starts_with("https://"))
            {
                return Err(error("journal.advertise_url", "an http:// or https:// URL other nodes can reach"));
            }
            let url = std::env::var(url_env).map_err(|_| {
                error("journal.url_env", format!("the environment variable {url_env} holds no PostgreSQL URL"))
            })?;
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(error("journal.url_env", format!("{url_env} must hold a postgres:// URL")));
            }
            JournalSpec::Postgres {
                url,
                lease_ttl: Duration::from_millis(*lease_ttl_ms),
                advertise_url: advertise_url.clone(),
                pool_size: *pool_size,
            }
        }
    };
    Ok(Loaded {
        data_dir: file.data_dir.clone(),
        tick: Duration::from_millis(file.tick_ms),
        engine,
        rails,
        funding,
        api,
        journal,
    })
}
