//! The configuration files: the shipped ones load, overrides apply, and every bad key is named.

use config::{RailSpec, load, parse};

const DEFAULT: &str = include_str!("../../../../config/default.toml");
const DEVNET: &str = include_str!("../../../../config/devnet.toml");
const BITCOIN: &str = include_str!("../../../../config/bitcoin.example.toml");
const CLUSTER: &str = include_str!("../../../../config/cluster.example.toml");

fn check(text: &str, overrides: &[(&str, &str)]) -> Result<config::Loaded, String> {
    let overrides: Vec<(String, String)> = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let file = parse(text, &overrides).map_err(|e| e.to_string())?;
    load(&file).map_err(|e| e.to_string())
}

#[test]
fn the_shipped_files_load() {
    let loaded = check(DEFAULT, &[]).unwrap();
    assert_eq!(loaded.rails.len(), 4);
    assert!(loaded.rails.iter().all(|r| matches!(r, RailSpec::Sandbox(_))));
    assert_eq!(loaded.funding.len(), 8);
    // The sandbox Bitcoin rail pays its fees in BTC and carries nothing below dust.
    let RailSpec::Sandbox(btc) = &loaded.rails[3] else { panic!() };
    assert_eq!((btc.capabilities.fee_asset, btc.capabilities.amount_min.units()), (model::Asset::BTC, 546));
    assert_eq!(loaded.engine.state.fee_assets[&btc.capabilities.rail], model::Asset::BTC);
    let devnet = check(DEVNET, &[]).unwrap();
    let RailSpec::Evm { config, key_env } = &devnet.rails[0] else { panic!("devnet rails are EVM") };
    assert_eq!((config.chain_id, key_env.as_str(), config.tokens.len()), (31337, "RAILYARD_DEVNET_KEY", 1));
    let bitcoin = check(BITCOIN, &[]).unwrap();
    let RailSpec::Bitcoin { config, key_env } = &bitcoin.rails[0] else { panic!("a Bitcoin rail") };
    assert_eq!(
        (key_env.as_str(), config.amount_min.units(), config.fee_cap_sats),
        ("RAILYARD_BTC_KEY", 1_000, 200_000)
    );
    assert!(matches!(config.auth, rails::btc::RpcAuth::Cookie(_)));
    assert_eq!(bitcoin.engine.state.fee_assets[&config.rail], model::Asset::BTC);
}

/// The cluster example names its database through a variable (unset here: named as the key
/// to fix); a lease time out of range and an advertised address that is not a URL are named.
#[test]
fn the_cluster_example_parses_and_its_journal_settings_are_checked() {
    let missing = check(CLUSTER, &[("RAILYARD__JOURNAL__URL_ENV", "RAILYARD_TEST_UNSET_PG_URL")]).unwrap_err();
    assert!(missing.contains("journal.url_env") && missing.contains("RAILYARD_TEST_UNSET_PG_URL"), "{missing}");
    let short = check(CLUSTER, &[("RAILYARD__JOURNAL__LEASE_TTL_MS", "100")]).unwrap_err();
    assert!(short.contains("journal.lease_ttl_ms"), "{short}");
    let bad = check(CLUSTER, &[("RAILYARD__JOURNAL__ADVERTISE_URL", "10.0.0.5:8080")]).unwrap_err();
    assert!(bad.contains("journal.advertise_url"), "{bad}");
    let none = check(CLUSTER, &[("RAILYARD__JOURNAL__POOL_SIZE", "0")]).unwrap_err();
    assert!(none.contains("journal.pool_size"), "{none}");
}

/// The redb journal's cache is set in MiB (default 4, as the journal's own default); one of
/// none, or past 64 GiB, is named.
#[test]
fn the_redb_cache_is_set_and_checked() {
    let default = check(DEFAULT, &[]).unwrap();
    assert_eq!(default.engine.journal.cache_bytes, journal::Config::default().cache_bytes);
    let larger = check(DEFAULT, &[("RAILYARD__JOURNAL_CACHE_MIB", "64")]).unwrap();
    assert_eq!(larger.engine.journal.cache_bytes, 64 << 20);
    let unset = check(DEVNET, &[]).unwrap();
    assert_eq!(unset.engine.journal.cache_bytes, journal::Config::default().cache_bytes, "not set: the default");
    for bad in ["0", "65537"] {
        let error = check(DEFAULT, &[("RAILYARD__JOURNAL_CACHE_MIB", bad)]).unwrap_err();
        assert!(error.contains("journal_cache_mib") && error.contains("1 to 65536 MiB"), "{bad}: {error}");
    }
}

#[test]
fn a_bad_bitcoin_rail_is_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RAILYARD__RAILS__0__NETWORK", "\"base\"")], "config rails[0].network: must be bitcoin"),
        (
            &[("RAILYARD__RAILS__0__AMOUNT_MIN", "\"0.000005\"")],
            "config rails[0].amount_min: must be at least 0.00000546",
        ),
        (&[("RAILYARD__RAILS__0__RPC_USER", "\"railyard\"")], "config rails[0].rpc_cookie_file: give either"),
        (&[("RAILYARD__RAILS__0__FEE_RATE_MAX_SAT_VB", "0")], "config rails[0].fee_rate_max_sat_vb:"),
        (&[("RAILYARD__RAILS__0__FEE_CAP", "\"a lot\"")], "config rails[0].fee_cap:"),
    ];
    for (overrides, expected) in cases {
        let error = check(BITCOIN, overrides).err().unwrap_or_else(|| panic!("{overrides:?} must be refused"));
        assert!(error.contains(expected), "{overrides:?}: {error}");
    }
}

#[test]
fn environment_overrides_apply() {
    let loaded = check(
        DEFAULT,
        &[
            ("RAILYARD__QUEUE__CAPACITY", "500000"),
            ("RAILYARD__RAILS__1__BLOCK_TIME_MS", "500"),
            ("RAILYARD__DATA_DIR", "/tmp/ry"),
            ("RAILYARD__POOLS__0__FUND", "50000"),
            ("RAILYARD__POOLS__1__MIN", "0.25"),
            ("OTHER", "x"),
        ],
    )
    .unwrap();
    // Amounts take plain values: the type of what they replace decides.
    assert_eq!(loaded.funding[0].2, model::Asset::USDC.parse_amount("50000").unwrap());
    assert_eq!(loaded.engine.state.pools[1].min, model::Asset::ETH.parse_amount("0.25").unwrap());
    assert_eq!(loaded.engine.queue.capacity, 500_000);
    let RailSpec::Sandbox(rail) = &loaded.rails[1] else { panic!() };
    assert_eq!(rail.block_time_ms, 500);
    assert_eq!(loaded.data_dir, std::path::PathBuf::from("/tmp/ry"));
}

#[test]
fn every_bad_key_is_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("RAILYARD__QUEUE__CAPACITY", "\"lots\"")], "config queue.capacity:"),
        (&[("RAILYARD__QUEUE__CAPACITY", "0")], "config queue.capacity:"),
        (&[("RAILYARD__QUEUE__CAPACITY", "10")], "config queue.capacity_per_merchant: must be 1 to capacity"),
        (&[("RAILYARD__CLASSES__1__WEIGHT", "0")], "config classes[1].weight:"),
        (&[("RAILYARD__CLASSES__2__NAME", "\"Not A Name\"")], "config classes[2].name:"),
        (&[("RAILYARD__RAILS__0__NETWORK", "\"etherium\"")], "config rails[0].network: unknown network"),
        (&[("RAILYARD__RAILS__1__ASSETS", "[\"ETH\", \"DOGE\"]")], "config rails[1].assets[1]: unknown asset DOGE"),
        (&[("RAILYARD__RAILS__2__FEE", "\"0.0000000000000000001\"")], "config rails[2].fee:"),
        (&[("RAILYARD__RAILS__2__NAME", "\"sandbox-base\"")], "configured twice"),
        (&[("RAILYARD__RAILS__0__COLOUR", "\"red\"")], "config rails[0]: unknown field `colour`"),
        (&[("RAILYARD__POOLS__0__RAIL", "\"nowhere\"")], "config pools[0].rail: no rail named nowhere"),
        (&[("RAILYARD__POOLS__0__MIN", "\"-1\"")], "config pools[0].min:"),
        (&[("RAILYARD__POOLS__0__TARGET", "\"99999999\"")], "config pools[0].target: min <= target <= max"),
        (&[("RAILYARD__TICK_MS", "0")], "config tick_ms:"),
        (
            &[("RAILYARD__RAILS__1__CONFIRMATIONS_FINAL", "0")],
            "config rails[1].confirmations_final: must be at least 1",
        ),
        (&[("RAILYARD__NOPE__X", "1")], "config nope.x: no such key"),
        (&[("RAILYARD__RAILS__9__SEED", "1")], "config rails.9.seed: index out of range"),
    ];
    for (overrides, expected) in cases {
        let error = check(DEFAULT, overrides).err().unwrap_or_else(|| panic!("{overrides:?} must be refused"));
        assert!(error.contains(expected), "{overrides:?}: {error}");
    }
    assert!(check("data_dir = ", &[]).unwrap_err().contains("config (file)"));
    assert!(check("data_dir = \"x\"", &[]).unwrap_err().contains("missing field"));
}
