//! `railyard serve` on a Bitcoin rail (`kind = "bitcoin"`): the regtest node of
//! `crates/regtest` (blocks validated by Bitcoin Core's engine) serves Core's RPC from this
//! process (or `bitcoind -regtest` when `BITCOIND_EXE` names one) and mines a block every
//! 300 ms; the server talks to it with a user and a password
//! from the environment and a hot wallet key from the environment. Over the real API: a batch
//! with a dust payout is refused whole, naming the row; the valid batch settles in one
//! transaction whose view gives its vbytes and fee per payout; every recipient is paid exactly.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::bip32::Xpriv;
use rails::btc::{BitcoinConfig, BitcoinRail, RpcAuth, WalletKey};
use regtest::harness::{Regtest, burn_address};
use serde_json::{Value, json};

use crate::server::Server;

const PAYOUTS: u64 = 20;

fn payout_address(i: u64) -> bitcoin::Address {
    let hash = blake3::hash(&(i + 5_000).to_le_bytes());
    let program = bitcoin::WitnessProgram::new(bitcoin::WitnessVersion::V0, &hash.as_bytes()[..20]).unwrap();
    bitcoin::Address::from_witness_program(program, bitcoin::Network::Regtest)
}

fn row(i: u64, amount: &str) -> Value {
    json!({ "reference": format!("btc-{i}"), "amount": amount, "asset": "BTC",
            "destination": payout_address(i).to_string(), "networks": ["bitcoin-regtest"], "class": "standard" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_settles_btc_payouts_on_a_bitcoin_core_rpc_node() {
    let chain = Arc::new(Regtest::start("railyard", "rpc-secret").await);
    let key = Xpriv::new_master(bitcoin::Network::Regtest, &[77; 32]).unwrap().to_string();
    // The hot wallet's first address, from the same key the server will use.
    let probe = BitcoinConfig {
        rail: model::Name::new("btc").unwrap(),
        network: model::BitcoinNetwork::Regtest,
        rpc_url: chain.url(),
        auth: RpcAuth::Password { user: "railyard".into(), password: "rpc-secret".to_owned().into() },
        confirmations_final: 2,
        batch_size_max: 100,
        amount_min: model::Amount::new(546),
        amount_max: model::Amount::new(10u128.pow(15)),
        finality_expected_ms: 1_000,
        fee_rate_max_sat_vb: 50,
        fee_rate_fallback_sat_vb: 2,
        fee_cap_sats: 100_000,
        target_blocks_default: 6,
        birth_height: 0,
        request_timeout: Duration::from_secs(5),
    };
    let wallet = BitcoinRail::new(probe, &WalletKey::new(&key)).unwrap();
    chain.mine(2, &wallet.receive_address()).await;
    chain.mine(100, &burn_address()).await;
    let miner = chain.spawn_miner(Duration::from_millis(300));

    let data = tempfile::tempdir().unwrap();
    let example = include_str!("../../../../config/bitcoin.example.toml");
    let config = example
        .replace("rpc_url = \"http://127.0.0.1:18443\"", &format!("rpc_url = \"{}\"", chain.url()))
        .replace(
            "rpc_cookie_file = \"/var/lib/bitcoind/regtest/.cookie\"",
            "rpc_user = \"railyard\"\nrpc_password_env = \"TEST_BTC_RPC_PASSWORD\"",
        )
        .replace("confirmations_final = 3", "confirmations_final = 2");
    assert_ne!(config, example);
    std::fs::write(data.path().join("railyard.toml"), config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_railyard"));
    command
        .current_dir(data.path())
        .env("RAILYARD__DATA_DIR", data.path())
        .env("RAILYARD__TICK_MS", "50")
        .env("TEST_BTC_RPC_PASSWORD", "rpc-secret")
        .env("RAILYARD_BTC_KEY", &key)
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(data.path().join("railyard.toml"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let server = Server::spawn(command);
    let treasury = server.key("treasury", None).await;
    let merchant = server.key("merchant", Some(1)).await;
    let post = |path: &str, key: &str, idempotency: &str, body: Value| {
        server.call(
            server.request(reqwest::Method::POST, path, Some(key)).header("idempotency-key", idempotency).json(&body),
        )
    };
    let (status, body) =
        post("/v1/pools/bitcoin-regtest/BTC/fund", &treasury, "fund-1", json!({ "amount": "1" })).await;
    assert_eq!(status, 204, "{body}");

    // A dust payout: the whole batch is refused, the row and the reason named.
    let mut rows: Vec<Value> = (0..PAYOUTS).map(|i| row(i, "0.001")).collect();
    rows[3] = row(3, "0.00000500");
    let (status, problem) = post("/v1/batches", &merchant, "with-dust", json!({ "payments": rows })).await;
    assert_eq!(status, 422);
    let text = problem.to_string();
    assert!(text.contains("dust") && text.contains("\"row\":3"), "{text}");

    let amounts: Vec<u64> = (0..PAYOUTS).map(|i| 100_000 + i * 1_000).collect();
    let rows: Vec<Value> =
        (0..PAYOUTS).map(|i| row(i, &format!("0.{:08}", amounts[usize::try_from(i).unwrap()]))).collect();
    let (status, accepted) = post("/v1/batches", &merchant, "payouts", json!({ "payments": rows })).await;
    assert_eq!(status, 202, "{accepted}");
    let batch = accepted["batch"].as_str().unwrap().to_owned();
    let view = server.wait_final(&merchant, &batch, Duration::from_secs(60)).await;
    assert_eq!(view["states"]["settled"], json!(PAYOUTS), "{view}");
    let (status, list) = server.get(&format!("/v1/payments?batch={batch}"), &merchant).await;
    assert_eq!(status, 200, "{list}");
    let settlement = &list["payments"][0]["settlement"];
    assert_eq!(settlement["network"], json!("bitcoin-regtest"), "{settlement}");
    let vbytes = settlement["vbytes"].as_u64().expect("a Bitcoin settlement's size");
    assert!(settlement["fee_per_payout"].is_string(), "{settlement}");
    eprintln!(
        "serve on a Bitcoin rail: {PAYOUTS} payouts, settlement of {} payouts, {vbytes} vB, fee {} BTC ({} per payout)",
        settlement["payouts"], settlement["fee"], settlement["fee_per_payout"]
    );
    miner.abort();
    for i in 0..PAYOUTS {
        let paid = chain.balance(&payout_address(i).script_pubkey()).await;
        assert_eq!(paid, amounts[usize::try_from(i).unwrap()], "payout {i} paid exactly once");
    }
}
