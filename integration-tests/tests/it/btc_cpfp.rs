//! The engine on the Bitcoin rail when a payee pins its settlement: the payee spends its output
//! at once at a low fee while the settlement itself is passed over by miners. A replacement
//! would evict the payee's transaction and pay its fee, so the rail refuses to bump; the engine
//! journals a child paying for the parent (child pays for parent) before sending it, sends it
//! after the parent, survives a restart with the child in its book, and books the fee of the
//! parent and the child that was mined. Regtest node of `crates/regtest` (blocks validated by
//! libbitcoinkernel) in this process, or `bitcoind -regtest` when `BITCOIND_EXE` names one;
//! the engine runs on virtual time.

use std::sync::Arc;

use bitcoin::bip32::Xpriv;
use bitcoin::consensus::encode::deserialize;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use engine::{Draft, Engine, Intake};
use integration_tests::btc::{BtcSetup, RAIL, btc_config, btc_engine_config};
use model::{Amount, Asset, BitcoinNetwork, MerchantId, Name, Network, PaymentState, SettlementState, Timestamp};
use rails::Rail;
use rails::btc::{BitcoinRail, WalletKey};
use regtest::harness::{Regtest, burn_address};

const T0: Timestamp = Timestamp(1_800_000_000_000);

fn payee_key(i: u8) -> SecretKey {
    SecretKey::from_slice(&[i + 1; 32]).unwrap()
}

fn payee_address(i: u8) -> bitcoin::Address {
    let public = bitcoin::CompressedPublicKey(payee_key(i).public_key(&Secp256k1::new()));
    bitcoin::Address::p2wpkh(&public, bitcoin::Network::Regtest)
}

async fn open(dir: &std::path::Path, setup: &BtcSetup, key: &str, now: Timestamp) -> Engine {
    let rail: Arc<dyn Rail> = Arc::new(BitcoinRail::new(btc_config(setup), &WalletKey::new(key)).unwrap());
    Engine::open(&dir.join("journal.redb"), btc_engine_config(), vec![rail], now).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_settlement_is_pulled_in_by_a_journaled_child_and_both_fees_are_booked() {
    let _ = tracing_subscriber::fmt().with_env_filter("info").with_test_writer().try_init();
    let chain = Regtest::start("railyard", "cpfp-test").await;
    let key = Xpriv::new_master(bitcoin::Network::Regtest, &[43; 32]).unwrap().to_string();
    let setup = BtcSetup {
        rpc_url: chain.url(),
        user: "railyard".into(),
        password: "cpfp-test".into(),
        wallet_key: key.clone(),
        payments: 3,
    };
    let funding = BitcoinRail::new(btc_config(&setup), &WalletKey::new(&key)).unwrap();
    chain.mine(2, &funding.receive_address()).await;
    chain.mine(100, &burn_address()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut engine = open(dir.path(), &setup, &key, T0).await;
    let rail = Name::new(RAIL).unwrap();
    engine.fund_pool(rail, Asset::BTC, Amount::new(1_000_000_000), 1, T0).await.unwrap();
    let drafts: Vec<Draft> = (0..3)
        .map(|i| Draft {
            reference: format!("pinned-{i}"),
            amount: Amount::new(250_000),
            asset: Asset::BTC,
            destination: payee_address(i).to_string(),
            networks: vec![Network::Bitcoin(BitcoinNetwork::Regtest)],
            class: Name::new("urgent").unwrap(),
            deadline: None,
        })
        .collect();
    let Intake::Accepted { payments, .. } = engine.submit(MerchantId(1), "pinned", &drafts, T0).await.unwrap() else {
        panic!("accepted")
    };

    // Signed, journaled, broadcast as one transaction.
    let mut now = T0;
    let settlement = loop {
        now = now.saturating_add_ms(1_000);
        engine.tick(now).await.unwrap();
        let record = engine.payment(payments[0]).unwrap().unwrap();
        if let Some(id) = record.settlement
            && engine.settlement(id).unwrap().unwrap().state == SettlementState::Broadcast
        {
            break id;
        }
        assert!(now < T0.saturating_add_ms(60_000), "not broadcast");
    };
    let parent = engine.settlement(settlement).unwrap().unwrap().txs[0].clone();
    let parent_tx: bitcoin::Transaction = deserialize(&parent.raw).unwrap();
    let vout = parent_tx.output.iter().position(|o| o.script_pubkey == payee_address(0).script_pubkey()).unwrap();
    // Miners pass it over (as if it paid nothing), and payee 0 moves its money at once,
    // paying little: the pin.
    chain.prioritise(parent_tx.compute_txid(), -i64::try_from(parent.fee.units()).unwrap()).await;
    let to = payee_address(9).script_pubkey();
    let pin = regtest::payee::spend_p2wpkh(&parent_tx, u32::try_from(vout).unwrap(), &payee_key(0), to, 200);
    chain.send(&pin).await.unwrap();
    chain.mine(1, &burn_address()).await;

    // Stuck past the anomaly policy's 15 s: the rail will not bump it, the engine accelerates.
    now = now.saturating_add_ms(16_000);
    engine.tick(now).await.unwrap();
    let record = engine.settlement(settlement).unwrap().unwrap();
    assert_eq!(record.txs.len(), 1, "no replacement was signed");
    assert_eq!(record.children.len(), 1, "a child was journaled");
    let child = record.children[0].clone();
    assert!(child.spends_from(&parent.txid), "the child spends the parent's change");
    let child_txid: bitcoin::Txid = deserialize::<bitcoin::Transaction>(&child.raw).unwrap().compute_txid();
    assert_eq!(chain.transaction(child_txid).await.map(|(_, c)| c), Some(0), "the child was sent after the commit");

    // A restart: the child is in the replayed book, and its spend is the wallet's again.
    drop(engine);
    let mut engine = open(dir.path(), &setup, &key, now).await;
    assert_eq!(engine.settlement(settlement).unwrap().unwrap().children, vec![child.clone()]);

    // Mined as a package; final at depth 2; every payee paid once; the fee of both booked.
    chain.mine(2, &burn_address()).await;
    for _ in 0..5 {
        now = now.saturating_add_ms(1_000);
        engine.tick(now).await.unwrap();
    }
    for payment in &payments {
        assert_eq!(engine.payment(*payment).unwrap().unwrap().state, PaymentState::Settled);
    }
    for i in 1..3 {
        assert_eq!(chain.balance(&payee_address(i).script_pubkey()).await, 250_000, "payee {i} paid once");
    }
    assert_eq!(chain.transaction(child_txid).await.map(|(_, c)| c), Some(2), "the child was mined with its parent");
    let booked = engine.state().pools.ledger().account_of(ledger::Owner::Fees(rail), Asset::BTC).unwrap();
    let both = parent.fee.checked_add(child.fee).unwrap();
    assert_eq!(booked.balance.credits_posted, both, "parent {} + child {}", parent.fee, child.fee);
    engine.state().pools.ledger().verify().unwrap();
}
