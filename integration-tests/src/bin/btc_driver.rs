//! Bitcoin kill-test driver: opens the engine on a data directory over one Bitcoin rail (the
//! node described in a JSON file), funds the BTC pool once, submits the fixed batch with its
//! idempotency key (again on every start), and runs until every payment is settled, printing
//! `PROGRESS <settled> <total>` after each round.
//!
//! With `--hold-first-broadcast`, the first broadcast prints `SIGNED <txid> <raw hex>` and
//! never returns: the settlement is signed and journaled, nothing has reached the node, and
//! the test SIGKILLs the driver there. The wrapper is the test's, not the engine's.
//!
//! Usage: btc-driver <data dir> <setup.json> [--hold-first-broadcast]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use engine::{Engine, Intake};
use integration_tests::btc::{BtcSetup, RAIL, btc_batch, btc_config, btc_engine_config};
use integration_tests::{now, settle_all};
use model::{Address, Amount, Asset, MerchantId, Name, SignedTx, Spend};
use rails::btc::{BitcoinRail, WalletKey};
use rails::{Batch, Capabilities, FeeQuote, Health, Observation, Rail, RailError, Watch};

/// The Bitcoin rail, whose first broadcast hangs after saying what it was given.
#[derive(Debug)]
struct HoldFirstBroadcast {
    rail: BitcoinRail,
    held: AtomicBool,
}

#[async_trait]
impl Rail for HoldFirstBroadcast {
    fn capabilities(&self) -> &Capabilities {
        self.rail.capabilities()
    }
    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError> {
        self.rail.quote(batch).await
    }
    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.rail.build(batch, fee).await
    }
    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError> {
        if !self.held.swap(true, Ordering::SeqCst) {
            let raw: String = tx.raw.iter().map(|b| format!("{b:02x}")).collect();
            let txid: String = tx.txid.iter().map(|b| format!("{b:02x}")).collect();
            println!("SIGNED {txid} {raw}");
            std::future::pending::<()>().await;
        }
        self.rail.broadcast(tx).await
    }
    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError> {
        self.rail.observe(watch).await
    }
    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.rail.bump(batch, previous, fee).await
    }
    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError> {
        self.rail.cancel(previous, fee).await
    }
    async fn accelerate(
        &self,
        parent: &SignedTx,
        children: &[SignedTx],
        fee: &FeeQuote,
    ) -> Result<SignedTx, RailError> {
        self.rail.accelerate(parent, children, fee).await
    }
    async fn health(&self) -> Health {
        self.rail.health().await
    }
    async fn balance_of(&self, destination: &Address, asset: Asset) -> Result<Amount, RailError> {
        self.rail.balance_of(destination, asset).await
    }
    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError> {
        self.rail.recover_spends(spends)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, setup, hold) = match args.as_slice() {
        [dir, setup] => (dir, setup, false),
        [dir, setup, flag] if flag == "--hold-first-broadcast" => (dir, setup, true),
        _ => {
            eprintln!("usage: btc-driver <data dir> <setup.json> [--hold-first-broadcast]");
            std::process::exit(64);
        }
    };
    let setup: BtcSetup =
        serde_json::from_str(&std::fs::read_to_string(setup).expect("read setup.json")).expect("parse setup.json");
    let rail = BitcoinRail::new(btc_config(&setup), &WalletKey::new(&setup.wallet_key)).expect("bitcoin rail");
    let rail: Arc<dyn Rail> =
        if hold { Arc::new(HoldFirstBroadcast { rail, held: AtomicBool::new(false) }) } else { Arc::new(rail) };
    let mut engine =
        Engine::open(&std::path::Path::new(dir).join("journal.redb"), btc_engine_config(), vec![rail], now())
            .await
            .expect("open engine");
    let pool = Name::new(RAIL).expect("rail name");
    if engine.state().pools.available(pool, Asset::BTC).is_zero() {
        engine.fund_pool(pool, Asset::BTC, Amount::new(100_000_000), 1, now()).await.expect("fund pool");
    }
    match engine.submit(MerchantId(1), "btc-batch", &btc_batch(setup.payments), now()).await.expect("submit") {
        Intake::Accepted { .. } => println!("ACCEPTED"),
        Intake::Duplicate { .. } => println!("DUPLICATE"),
    }
    settle_all(&mut engine, Duration::from_secs(120)).await;
}
