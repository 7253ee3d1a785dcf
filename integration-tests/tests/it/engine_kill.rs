//! The engine under SIGKILL against two real anvil chains: a driver process runs the engine
//! over a data directory while a few hundred payments settle; the test kills it at random
//! points (20 kills by default, `RAILYARD_ENGINE_KILLS` for more), starts it again each time
//! (it resubmits the same batches), and finally lets it finish. Then every recipient's on-chain
//! balance, summed over both chains, must equal exactly what was accepted for it — nothing
//! missing, nothing twice — and the recovered ledger must balance.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address as EvmAddress, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use integration_tests::kill::{ChainSetup, Chains, PER_BATCH, engine_config, owed};
use model::{Asset, PaymentState};

const HOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const DEPLOYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const BATCH_BYTECODE: &str = include_str!("../../../contracts/out/BatchTransfer.bin");
const TOKEN_BYTECODE: &str = include_str!("../../../contracts/out/TestStablecoin.bin");

alloy::sol! {
    function mint(address to, uint256 value);
    function approve(address spender, uint256 value) returns (bool);
    function balanceOf(address owner) view returns (uint256);
}

struct Anvil {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn anvil_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("RAILYARD_ANVIL") {
        return PathBuf::from(path);
    }
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    assert!(path.exists(), "anvil is not installed at {}: run scripts/install-tools", path.display());
    path
}

async fn start_anvil(chain_id: u64) -> Anvil {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(anvil_binary())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--chain-id",
            &chain_id.to_string(),
            "--block-time",
            "1",
        ])
        .arg("--cache-path")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start anvil");
    let anvil = Anvil { child, url: format!("http://127.0.0.1:{port}"), _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider(&anvil).get_chain_id().await.is_err() {
        assert!(Instant::now() < deadline, "anvil did not answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anvil
}

fn provider(anvil: &Anvil) -> RootProvider {
    RootProvider::new_http(anvil.url.parse().unwrap())
}

async fn send(
    anvil: &Anvil,
    key: &str,
    to: Option<EvmAddress>,
    input: Vec<u8>,
) -> alloy::rpc::types::TransactionReceipt {
    let provider = provider(anvil);
    let signer: PrivateKeySigner = key.parse().unwrap();
    let mut tx = TxEip1559 {
        chain_id: provider.get_chain_id().await.unwrap(),
        nonce: provider.get_transaction_count(signer.address()).pending().await.unwrap(),
        gas_limit: 5_000_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 2_000_000_000,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(input),
    };
    let signature = signer.sign_transaction_sync(&mut tx).unwrap();
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    let hash = *envelope.tx_hash();
    let _pending = provider.send_raw_transaction(&envelope.encoded_2718()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(hash).await.unwrap() {
            return receipt;
        }
        assert!(Instant::now() < deadline, "setup transaction not mined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn code(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

async fn prepare(anvil: &Anvil, rail: &str, chain_id: u64) -> ChainSetup {
    let batch = send(anvil, DEPLOYER_KEY, None, code(BATCH_BYTECODE)).await.contract_address.unwrap();
    let token = send(anvil, DEPLOYER_KEY, None, code(TOKEN_BYTECODE)).await.contract_address.unwrap();
    let hot = HOT_KEY.parse::<PrivateKeySigner>().unwrap().address();
    send(anvil, DEPLOYER_KEY, Some(token), mintCall { to: hot, value: U256::from(10u128.pow(15)) }.abi_encode()).await;
    send(anvil, HOT_KEY, Some(token), approveCall { spender: batch, value: U256::MAX }.abi_encode()).await;
    ChainSetup {
        rail: rail.into(),
        chain_id,
        url: anvil.url.clone(),
        batch_contract: batch.into_array(),
        token: token.into_array(),
    }
}

/// Runs the driver; kills it with SIGKILL `kill_after` after it started (None: lets it
/// finish). Returns whether it finished by itself.
fn run_driver(data: &Path, chains: &Path, kill_after: Option<Duration>) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engine-driver"))
        .arg(data)
        .arg(chains)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the driver");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::sync_channel::<String>(1024);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let give_up = started + Duration::from_secs(240);
    let kill_at = kill_after.map(|after| started + after);
    // Wait on the driver's output until it exits or the kill time comes, whichever is first:
    // the kill lands at a random moment, inside a round of work as often as between rounds.
    let finished = loop {
        let until = kill_at.unwrap_or(give_up).min(give_up);
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if std::env::var_os("RAILYARD_KILL_VERBOSE").is_some() {
                    eprintln!("{line}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break true,
            Err(mpsc::RecvTimeoutError::Timeout) if kill_at.is_some() => break false,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the driver did not finish within 240 s"),
        }
    };
    if !finished {
        child.kill().expect("SIGKILL the driver");
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    if finished {
        assert!(status.success(), "the driver failed: {status}");
    }
    finished
}

/// Two anvil chains with contracts deployed and the hot wallet funded, and the driver's files.
struct World {
    _l1: Anvil,
    _l2: Anvil,
    providers: [RootProvider; 2],
    chains: Chains,
    dir: tempfile::TempDir,
    chains_file: PathBuf,
}

async fn world(batches: u64) -> World {
    let (l1, l2) = tokio::join!(start_anvil(31_337), start_anvil(31_338));
    let (c1, c2) = tokio::join!(prepare(&l1, "l1", 31_337), prepare(&l2, "l2", 31_338));
    let chains = Chains { chains: vec![c1, c2], hot_key: HOT_KEY.into(), batches };
    let dir = tempfile::tempdir().unwrap();
    let chains_file = dir.path().join("chains.json");
    std::fs::write(&chains_file, serde_json::to_string(&chains).unwrap()).unwrap();
    let providers = [provider(&l1), provider(&l2)];
    World { _l1: l1, _l2: l2, providers, chains, dir, chains_file }
}

/// Every recipient got exactly its amount on chain (summed over both chains), every payment is
/// settled in the journal, and the recovered ledger balances. Returns (settlements, records).
async fn verify(world: &World) -> (usize, u64) {
    let owed = owed(world.chains.batches);
    for (recipient, (asset, amount)) in &owed {
        let (asset, amount) = (*asset, *amount);
        let recipient = *recipient;
        let mut received = U256::ZERO;
        for (p, chain) in world.providers.iter().zip(&world.chains.chains) {
            received += if asset == Asset::ETH {
                p.get_balance(EvmAddress::from(recipient)).await.unwrap()
            } else {
                let call = alloy::rpc::types::TransactionRequest::default()
                    .to(EvmAddress::from(chain.token))
                    .input(balanceOfCall { owner: EvmAddress::from(recipient) }.abi_encode().into());
                balanceOfCall::abi_decode_returns(&p.call(call).await.unwrap()).unwrap()
            };
        }
        assert_eq!(
            received,
            U256::from(amount.units()),
            "recipient {recipient:?} must receive exactly {amount} {asset}"
        );
    }
    let journal = journal::Journal::open(world.dir.path().join("journal.redb"), journal::Config::default()).unwrap();
    let state = journal.recover_with::<engine::Replayed>(&engine_config(&world.chains).state).unwrap().state.0;
    // Every payment settled and left the book for the history store.
    assert!(state.book.payments.is_empty() && state.book.open_settlements().is_empty());
    assert_eq!(state.book.count(PaymentState::Settled), owed.len() as u64);
    assert_eq!(state.book.counts().len(), 1, "settled is the only state: {:?}", state.book.counts());
    state.pools.ledger().verify().unwrap();
    let settlements = journal.history_scan(b"s", None, usize::MAX).unwrap().len();
    (settlements, journal.tip())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_and_stablecoin_payments_settle_on_two_anvil_chains() {
    let started = Instant::now();
    let world = world(16).await;
    assert!(run_driver(world.dir.path(), &world.chains_file, None));
    let (settlements, records) = verify(&world).await;
    eprintln!(
        "anvil end to end: {} payments, {settlements} settlements, {records} journal records, {:?}",
        16 * PER_BATCH,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_survive_sigkill_and_are_paid_exactly_once_on_chain() {
    let kills: usize = std::env::var("RAILYARD_ENGINE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("RAILYARD_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0xe9);
    let mut rng = fastrand::Rng::with_seed(seed);
    let started = Instant::now();
    // About 0.8 s of work per kill: 16 batches (400 payments) for the default 20 kills.
    let batches = (kills as u64 * 4 / 5).max(16);
    let world = world(batches).await;
    let mut landed = 0;
    for _ in 0..kills {
        // Anywhere from start-up (recovery, resubmission) to well into the settling.
        if run_driver(world.dir.path(), &world.chains_file, Some(Duration::from_millis(rng.u64(150..1_500)))) {
            break;
        }
        landed += 1;
    }
    assert!(landed >= kills, "only {landed} of {kills} kills landed before the work was done: make the work longer");
    assert!(run_driver(world.dir.path(), &world.chains_file, None), "the last run finishes");
    let (settlements, records) = verify(&world).await;
    eprintln!(
        "engine kill test: {landed} kills, {} payments on 2 anvil chains, {settlements} settlements, {records} journal records, {:?}",
        batches * PER_BATCH,
        started.elapsed()
    );
}
