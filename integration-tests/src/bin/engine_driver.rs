//! Kill-test driver: opens the engine on a data directory over the EVM chains described in a
//! JSON file, funds its pools once, submits the fixed batches with their idempotency keys
//! (again on every start: the engine must recognise them), then runs until every payment is
//! settled, printing `PROGRESS <settled> <total>` after each round. The test SIGKILLs it at
//! random points and starts it again.
//!
//! Usage: engine-driver <data dir> <chains.json>

use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, Intake};
use integration_tests::kill::{Chains, batch, engine_config, evm_config};
use integration_tests::{now, settle_all};
use model::{Amount, Asset, MerchantId, Name};
use rails::Rail;
use rails::evm::{EvmRail, SecretKey};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, chains] = args.as_slice() else {
        eprintln!("usage: engine-driver <data dir> <chains.json>");
        std::process::exit(64);
    };
    let chains: Chains =
        serde_json::from_str(&std::fs::read_to_string(chains).expect("read chains.json")).expect("parse chains.json");
    let key = SecretKey::from_hex(&chains.hot_key).expect("hot key");
    let mut rails: Vec<Arc<dyn Rail>> = Vec::new();
    for chain in &chains.chains {
        rails.push(Arc::new(EvmRail::connect(evm_config(chain), &key).await.expect("connect rail")));
    }
    let mut engine =
        Engine::open(&std::path::Path::new(dir).join("journal.redb"), engine_config(&chains), rails, now())
            .await
            .expect("open engine");
    for (i, chain) in chains.chains.iter().enumerate() {
        let rail = Name::new(&chain.rail).expect("rail name");
        for (j, asset) in [Asset::ETH, Asset::USDC].into_iter().enumerate() {
            if engine.state().pools.available(rail, asset).is_zero() {
                let transfer = 1_000 + (i * 10 + j) as u128;
                engine.fund_pool(rail, asset, Amount::new(10u128.pow(22)), transfer, now()).await.expect("fund pool");
            }
        }
    }
    for b in 0..chains.batches {
        let outcome = engine.submit(MerchantId(1 + b % 3), &format!("kill-batch-{b}"), &batch(b, &chains), now()).await;
        match outcome.expect("submit") {
            Intake::Accepted { .. } => println!("ACCEPTED {b}"),
            Intake::Duplicate { .. } => println!("DUPLICATE {b}"),
        }
    }
    settle_all(&mut engine, Duration::from_secs(180)).await;
}
