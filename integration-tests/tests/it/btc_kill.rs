//! The engine on the Bitcoin rail under SIGKILL between signing and broadcast. The regtest
//! node (blocks validated by Bitcoin Core's engine, `crates/regtest`) lives in this process and
//! serves RPC on 127.0.0.1 (or `bitcoind -regtest` when `BITCOIND_EXE` names one), mining a
//! block every 300 ms; the driver process runs the engine.
//! Run 1 signs and journals the first settlement and is killed before the node has seen it;
//! run 2 recovers, broadcasts the very bytes run 1 journaled, and settles everything. Then
//! every recipient holds exactly what was accepted for it, and the ledger balances.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::bip32::Xpriv;
use bitcoin::consensus::encode::serialize;
use integration_tests::btc::{BtcSetup, btc_config, btc_engine_config, btc_payout};
use model::PaymentState;
use rails::btc::{BitcoinRail, WalletKey};
use regtest::harness::{Regtest, burn_address};

const PAYMENTS: u64 = 30;

fn driver(dir: &Path, setup: &Path, hold: bool) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_btc-driver"));
    command.arg(dir).arg(setup).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if hold {
        command.arg("--hold-first-broadcast");
    }
    command.spawn().expect("start the driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_signed_then_killed_before_broadcast_is_sent_after_restart_with_the_same_bytes() {
    let started = Instant::now();
    let chain = Arc::new(Regtest::start("railyard", "kill-test").await);
    let key = Xpriv::new_master(bitcoin::Network::Regtest, &[42; 32]).unwrap().to_string();
    let setup = BtcSetup {
        rpc_url: chain.url(),
        user: "railyard".into(),
        password: "kill-test".into(),
        wallet_key: key.clone(),
        payments: PAYMENTS,
    };
    // Fund the hot wallet: three coinbases, matured.
    let funding = BitcoinRail::new(btc_config(&setup), &WalletKey::new(&key)).unwrap();
    chain.mine(3, &funding.receive_address()).await;
    chain.mine(100, &burn_address()).await;
    let miner = chain.spawn_miner(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let setup_file = dir.path().join("setup.json");
    std::fs::write(&setup_file, serde_json::to_string(&setup).unwrap()).unwrap();

    // Run 1: killed once the first settlement is signed and journaled, before any broadcast.
    let mut child = driver(dir.path(), &setup_file, true);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut signed = None;
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("SIGNED ") {
            let (txid, raw) = rest.split_once(' ').unwrap();
            signed = Some((txid.to_owned(), hex::decode(raw).unwrap()));
            break;
        }
    }
    let (txid, raw) = signed.expect("the driver signs a settlement");
    child.kill().expect("SIGKILL the driver");
    child.wait().unwrap();
    let txid: bitcoin::Txid = txid.parse().unwrap();
    assert!(chain.transaction(txid).await.is_none(), "nothing reached the node before the kill");

    // Run 2: recovers and finishes.
    let mut child = driver(dir.path(), &setup_file, false);
    for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
        if std::env::var_os("RAILYARD_KILL_VERBOSE").is_some() {
            eprintln!("{line}");
        }
    }
    assert!(child.wait().unwrap().success(), "the second run settles everything");
    miner.abort();

    let (mined, confirmations) = chain.transaction(txid).await.expect("the journaled transaction");
    assert!(confirmations >= 1, "the journaled transaction confirmed");
    assert_eq!(serialize(&mined), raw, "with the very bytes run 1 signed");
    for i in 0..PAYMENTS {
        let (address, amount) = btc_payout(i);
        let script = address.parse::<bitcoin::Address<_>>().unwrap().assume_checked().script_pubkey();
        assert_eq!(u128::from(chain.balance(&script).await), amount.units(), "payout {i} paid exactly once");
    }
    let journal = journal::Journal::open(dir.path().join("journal.redb"), journal::Config::default()).unwrap();
    let state = journal.recover_with::<engine::Replayed>(&btc_engine_config().state).unwrap().state.0;
    assert_eq!(state.book.count(PaymentState::Settled), PAYMENTS);
    state.pools.ledger().verify().unwrap();
    let settlements = journal.history_scan(b"s", None, usize::MAX).unwrap().len();
    eprintln!("bitcoin kill test: {PAYMENTS} payouts, {settlements} settlements, {:?}", started.elapsed());
}
