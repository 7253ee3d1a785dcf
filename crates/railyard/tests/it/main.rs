//! The binary as a user runs it: `serve` on the embedded default settles demo payments and
//! resumes from its journal (redb, or PostgreSQL); bad configuration exits 64 naming the key;
//! a Bitcoin Core node (the regtest node) as a rail.

mod api;
mod bitcoin;
mod cli;
mod cluster;
mod dashboard;
mod devnet;
mod guards;
mod postgres;
mod server;
mod webhooks;

use std::process::Command;

fn railyard(data: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("RAILYARD__DATA_DIR", data)
        .env("RAILYARD__TICK_MS", "50")
        .env("RAILYARD__API__LISTEN", "\"127.0.0.1:0\"")
        .env("RAILYARD__RAILS__0__BLOCK_TIME_MS", "200")
        .env("RAILYARD__RAILS__1__BLOCK_TIME_MS", "200")
        .env("RAILYARD__RAILS__2__BLOCK_TIME_MS", "300");
    command
}

#[test]
fn serve_settles_demo_payments_and_resumes_from_its_journal() {
    let data = tempfile::tempdir().unwrap();
    let first =
        railyard(data.path()).args(["serve", "--demo-payments", "300", "--exit-when-settled"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{stdout}{}", String::from_utf8_lossy(&first.stderr));
    assert!(stdout.contains("accepted 300 demo payments"), "{stdout}");
    assert!(stdout.contains(r#"{"settled": 300}"#), "{stdout}");
    assert!(data.path().join("journal.redb").exists());

    let again =
        railyard(data.path()).args(["serve", "--demo-payments", "300", "--exit-when-settled"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(stdout.contains("demo batch already accepted (300 payments)"), "{stdout}");
    assert!(stdout.contains(r#"{"settled": 300}"#), "{stdout}");
}

#[test]
fn bad_configuration_exits_64_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let cases = [
        ("RAILYARD__QUEUE__SCAN_MAX", "0", "config queue.scan_max: must be greater than zero"),
        ("RAILYARD__RAILS__1__NETWORK", "\"mars\"", "config rails[1].network: unknown network"),
        ("RAILYARD__POOLS__3__ASSET", "\"DOGE\"", "config pools[3].asset: unknown asset DOGE"),
    ];
    for (key, value, message) in cases {
        let output = railyard(data.path()).env(key, value).args(["serve"]).output().unwrap();
        assert_eq!(output.status.code(), Some(64), "{key}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{key}: {stderr}");
    }
    // The devnet's EVM rails read their hot key from RAILYARD_DEVNET_KEY: missing, it is bad
    // configuration too, named.
    let no_key = railyard(data.path())
        .env_remove("RAILYARD_DEVNET_KEY")
        .env_remove("RAILYARD__RAILS__2__BLOCK_TIME_MS")
        .env_remove("RAILYARD__RAILS__1__BLOCK_TIME_MS")
        .env_remove("RAILYARD__RAILS__0__BLOCK_TIME_MS")
        .args(["--config", "config/devnet.toml", "serve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&no_key.stderr);
    assert_eq!(no_key.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("config rails[0].key_env"), "{stderr}");
    let missing = railyard(data.path()).args(["--config", "config/nope.toml", "check-config"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read config/nope.toml"));
    let ok = railyard(data.path()).args(["check-config"]).output().unwrap();
    assert!(ok.status.success());
    assert!(!data.path().join("journal.redb").exists(), "checking the configuration writes nothing");
}

/// `railyard sim` runs seeds of the real engine and says how they went; `--seed` replays one
/// and tells what it did. It needs no configuration file.
#[test]
fn sim_runs_seeds_and_replays_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_railyard")).current_dir(dir.path()).args(args).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let many = run(&["sim", "--seeds", "3", "--first", "10", "--payments", "40"]);
    assert!(many.contains("3 seeds from 10: 3 passed, 0 failed; 120 payments"), "{many}");
    let one = run(&["sim", "--seed", "11", "--payments", "40"]);
    assert!(one.contains("seed 11: ") && one.contains("40 payments"), "{one}");
    let again = run(&["sim", "--seed", "11", "--payments", "40"]);
    assert_eq!(one.lines().next(), again.lines().next(), "the same seed, the same run");
}

/// A port already in use stops `serve` before anything is written: no journal, so no first
/// admin key made and never shown.
#[test]
fn a_port_in_use_stops_serve_before_the_journal_is_touched() {
    let data = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = railyard(data.path()).args(["serve", "--listen", &address]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on {address}")), "{stderr}");
    assert!(!data.path().join("journal.redb").exists());
}
