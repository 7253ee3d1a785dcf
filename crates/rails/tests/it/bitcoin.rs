//! The Bitcoin rail against a regtest chain (`regtest::harness::Regtest`): the node of
//! `crates/regtest` (blocks validated by Bitcoin Core's own engine, libbitcoinkernel; our
//! mempool, BIP 125, scripts run by the kernel; Core's RPC over real HTTP), or a real
//! `bitcoind -regtest` when `BITCOIND_EXE` names one. The tests drive the chain through Core's
//! RPC only (generatetoaddress, submitblock for a competing branch, prioritisetransaction,
//! getrawtransaction, scantxoutset), so they run unchanged on both; the one thing Core cannot
//! be told, a fee estimate, is checked on our node only (the test says so on bitcoind).

use std::time::Duration;

use bitcoin::bip32::Xpriv;
use bitcoin::consensus::encode::deserialize;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network, ScriptBuf, Transaction, Txid};
use model::{Address, Amount, Asset, BitcoinNetwork, PaymentId, RailId, SignedTx, Spend};
use rails::btc::{BitcoinConfig, BitcoinRail, RpcAuth, WalletKey};
use rails::{Batch, FeeDetail, FeeQuote, Observation, Payout, Rail, RailError, Watch};
use regtest::harness::Regtest;
use serde_json::json;

const USER: &str = "railyard";
const PASSWORD: &str = "regtest-secret";

struct Chain {
    rt: Regtest,
}

/// A txid as the journal keeps it (display order) to Core's.
fn core_txid(txid: [u8; 32]) -> Txid {
    hex::encode(txid).parse().unwrap()
}

impl Chain {
    async fn new() -> Chain {
        Chain { rt: Regtest::start(USER, PASSWORD).await }
    }

    async fn call(&self, method: &str, params: serde_json::Value) -> Result<serde_json::Value, serde_json::Value> {
        self.rt.call(method, params).await
    }

    async fn mine(&self, count: u32) {
        self.rt.mine(count, &miner()).await;
    }

    async fn prioritise(&self, txid: [u8; 32], delta: i64) {
        self.rt.prioritise(core_txid(txid), delta).await;
    }

    /// The transaction as the node has it, and its confirmations (0: in the mempool).
    async fn transaction(&self, txid: [u8; 32]) -> Option<(Transaction, u64)> {
        self.rt.transaction(core_txid(txid)).await
    }

    async fn balance(&self, script: &ScriptBuf) -> u64 {
        self.rt.balance(script).await
    }

    fn config(&self) -> BitcoinConfig {
        BitcoinConfig {
            rail: RailId::new("btc-regtest").unwrap(),
            network: BitcoinNetwork::Regtest,
            rpc_url: self.rt.url(),
            auth: RpcAuth::Password { user: USER.into(), password: PASSWORD.to_owned().into() },
            confirmations_final: 3,
            batch_size_max: 500,
            amount_min: Amount::new(546),
            amount_max: Amount::new(100_000_000_000),
            finality_expected_ms: 1_800_000,
            fee_rate_max_sat_vb: 100,
            fee_rate_fallback_sat_vb: 2,
            fee_cap_sats: 1_000_000,
            target_blocks_default: 6,
            birth_height: 0,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// A rail whose wallet holds `coins` mature coinbases of 50 BTC.
    async fn funded_rail(&self, seed: u8, coins: u32) -> BitcoinRail {
        let rail = BitcoinRail::new(self.config(), &wallet_key(seed)).unwrap();
        let address = rail.receive_address();
        self.call("generatetoaddress", json!([coins, address])).await.unwrap();
        self.mine(100).await;
        assert_eq!(rail.wallet_balance().await.unwrap(), u64::from(coins) * 5_000_000_000);
        rail
    }
}

fn wallet_key(seed: u8) -> WalletKey {
    WalletKey::new(&Xpriv::new_master(Network::Regtest, &[seed; 32]).unwrap().to_string())
}

/// Where blocks are mined to when no wallet should get the reward.
fn miner() -> String {
    recipient(250, 0).0
}

/// Recipient `i` of seed `seed`: P2WPKH, P2TR, P2PKH and P2SH-P2WPKH in turn, so a batch
/// carries every standard script kind. (address text, its script)
fn recipient(seed: u8, i: u32) -> (String, ScriptBuf) {
    let secp = Secp256k1::new();
    let secret = recipient_key(seed, i);
    let public = CompressedPublicKey(secret.public_key(&secp));
    let address = match i % 4 {
        0 => bitcoin::Address::p2wpkh(&public, Network::Regtest),
        1 => bitcoin::Address::p2tr(&secp, public.0.x_only_public_key().0, None, Network::Regtest),
        2 => bitcoin::Address::p2pkh(public, Network::Regtest),
        _ => bitcoin::Address::p2shwpkh(&public, Network::Regtest),
    };
    (address.to_string(), address.script_pubkey())
}

/// The key of recipient `i` of seed `seed`.
fn recipient_key(seed: u8, i: u32) -> SecretKey {
    let mut bytes = [seed; 32];
    bytes[..4].copy_from_slice(&(i + 1).to_be_bytes());
    SecretKey::from_slice(&bytes).unwrap()
}

fn batch(seed: u8, count: u32, amount: impl Fn(u32) -> u128) -> Batch {
    let payouts = (0..count)
        .map(|i| Payout {
            payment: PaymentId(u128::from(i) + 1),
            destination: Address::parse(&recipient(seed, i).0, model::Network::Bitcoin(BitcoinNetwork::Regtest))
                .unwrap(),
            amount: Amount::new(amount(i)),
        })
        .collect();
    Batch { asset: Asset::BTC, payouts, within_ms: None }
}

fn txid(tx: &SignedTx) -> Txid {
    deserialize::<Transaction>(&tx.raw).unwrap().compute_txid()
}

fn inputs(tx: &SignedTx) -> Vec<([u8; 32], u32)> {
    let Spend::Inputs(inputs) = &tx.spend else { panic!("a Bitcoin spend is inputs") };
    inputs.clone()
}

fn watch(versions: &[&SignedTx], seen_in_block: Option<[u8; 32]>) -> Watch {
    Watch { versions: versions.iter().map(|v| (*v).clone()).collect(), seen_in_block, children: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_is_one_transaction_with_every_output_checked_and_cheaper_per_payout() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(1, 2).await;
    let payouts = batch(7, 100, |i| 10_000 + u128::from(i) * 7);
    let quote = rail.quote(&payouts).await.unwrap();
    let FeeDetail::Bitcoin { sat_per_kvb, vbytes } = quote.detail else { panic!("a Bitcoin quote") };
    // No estimate on a young chain: the configured fallback, 2 sat/vB.
    assert_eq!(sat_per_kvb, 2_000);
    let tx = rail.build(&payouts, &quote).await.unwrap();
    // The journaled txid is the transaction's, in display order.
    assert_eq!(hex::encode(tx.txid), txid(&tx).to_string());
    rail.broadcast(&tx).await.unwrap();
    rail.broadcast(&tx).await.unwrap(); // the same bytes again: harmless
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Pending);
    chain.mine(1).await;
    let Observation::Confirmed { txid: confirmed, depth, fee_paid, .. } =
        rail.observe(&watch(&[&tx], None)).await.unwrap()
    else {
        panic!("confirmed")
    };
    assert_eq!((confirmed, depth, fee_paid), (tx.txid, 1, tx.fee));
    let (mined, confirmations) = chain.transaction(tx.txid).await.unwrap();
    assert_eq!(confirmations, 1);
    assert_eq!(mined.output.len(), 101, "100 payouts and change");
    for (i, payout) in payouts.payouts.iter().enumerate() {
        let (_, script) = recipient(7, u32::try_from(i).unwrap());
        assert_eq!(mined.output[i].script_pubkey, script, "output {i} pays payout {i}'s address");
        assert_eq!(u128::from(mined.output[i].value.to_sat()), payout.amount.units(), "output {i}'s amount");
    }
    let vsize = mined.vsize() as u64;
    assert!(vsize.abs_diff(vbytes) <= 2, "the quote's size {vbytes} is the signed size {vsize}");
    assert!(tx.fee.units() <= quote.fee_max.units());

    // The same 100 payouts as single-output transactions: the quote of each (the dry run the
    // build signs), checked against one signed for real.
    let mut singles_vbytes = 0;
    let mut singles_fee = 0;
    for i in 0..100 {
        let one = Batch { payouts: vec![payouts.payouts[i].clone()], ..payouts.clone() };
        let quote = rail.quote(&one).await.unwrap();
        let FeeDetail::Bitcoin { vbytes, .. } = quote.detail else { panic!() };
        singles_vbytes += vbytes;
        singles_fee += quote.fee_max.units() - u128::from(68 * sat_per_kvb / 1_000);
        if i == 0 {
            let signed = rail.build(&one, &quote).await.unwrap();
            let size = deserialize::<Transaction>(&signed.raw).unwrap().vsize() as u64;
            assert!(size.abs_diff(vbytes) <= 2, "a single's quoted size {vbytes} is its signed size {size}");
        }
    }
    let batch_fee = tx.fee.units();
    println!(
        "bitcoin batch of 100: {vsize} vB, fee {batch_fee} sat ({} vB and {} sat per payout); 100 single-output \
         transactions: {singles_vbytes} vB, fee {singles_fee} sat ({} vB and {} sat per payout); the singles cost \
         {}.{:02} times the batch",
        vsize / 100,
        batch_fee / 100,
        singles_vbytes / 100,
        singles_fee / 100,
        singles_fee / batch_fee,
        singles_fee * 100 / batch_fee % 100,
    );
    assert!(singles_fee > 2 * batch_fee);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fee_rate_follows_the_nodes_estimate_for_the_deadline_within_the_cap() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(2, 1).await;
    let rate = |quote: FeeQuote| match quote.detail {
        FeeDetail::Bitcoin { sat_per_kvb, .. } => sat_per_kvb,
        _ => panic!(),
    };
    let mut payouts = batch(8, 3, |_| 50_000);
    // Dust and amounts below the rail's minimum never reach a transaction.
    let dust = batch(8, 2, |i| if i == 1 { 545 } else { 10_000 });
    assert!(matches!(rail.quote(&dust).await, Err(RailError::InvalidBatch(_))));
    // next block, an hour, a day
    if !(chain.rt.set_fee_rate(1, 40) && chain.rt.set_fee_rate(6, 12) && chain.rt.set_fee_rate(144, 3)) {
        eprintln!("bitcoind: Core estimates from fee history this test cannot write; only the fallback is checked");
        assert_eq!(rate(rail.quote(&payouts).await.unwrap()), 2_000, "Core has no estimate: the fallback");
        return;
    }
    payouts.within_ms = Some(600_000);
    assert_eq!(rate(rail.quote(&payouts).await.unwrap()), 40_000);
    payouts.within_ms = Some(86_400_000);
    assert_eq!(rate(rail.quote(&payouts).await.unwrap()), 3_000);
    payouts.within_ms = None; // the configured target, 6 blocks
    assert_eq!(rate(rail.quote(&payouts).await.unwrap()), 12_000);
    assert!(chain.rt.set_fee_rate(1, 5_000));
    payouts.within_ms = Some(60_000);
    assert_eq!(rate(rail.quote(&payouts).await.unwrap()), 100_000, "capped at 100 sat/vB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_is_replaced_by_rbf_and_exactly_one_version_confirms() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(3, 2).await;
    let payouts = batch(9, 5, |_| 200_000);
    let quote = rail.quote(&payouts).await.unwrap();
    let first = rail.build(&payouts, &quote).await.unwrap();
    rail.broadcast(&first).await.unwrap();
    // Miners want more than it pays.
    chain.prioritise(first.txid, -100_000_000).await;
    chain.mine(2).await;
    assert_eq!(rail.observe(&watch(&[&first], None)).await.unwrap(), Observation::Pending);
    let bumped = rail.bump(&payouts, &first, &quote).await.unwrap();
    assert_ne!(bumped.txid, first.txid);
    assert!(bumped.fee.units() > first.fee.units());
    let (old, new) = (inputs(&first), inputs(&bumped));
    assert!(old.iter().all(|input| new.contains(input)), "the replacement spends every input of the first");
    rail.broadcast(&bumped).await.unwrap();
    // The first is out of the mempool; broadcasting it again is refused (it pays less).
    assert!(chain.transaction(first.txid).await.is_none());
    assert!(matches!(rail.broadcast(&first).await, Err(RailError::Rejected(_))));
    chain.mine(1).await;
    let both = watch(&[&first, &bumped], None);
    let Observation::Confirmed { txid, .. } = rail.observe(&both).await.unwrap() else { panic!("confirmed") };
    assert_eq!(txid, bumped.txid);
    assert!(chain.transaction(first.txid).await.is_none(), "the first version can never confirm");
    for i in 0..5 {
        assert_eq!(chain.balance(&recipient(9, i).1).await, 200_000, "recipient {i} paid exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_a_payee_spent_from_is_not_replaced_but_pulled_in_by_a_child_paying_for_both() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(4, 2).await;
    let payouts = batch(10, 3, |_| 300_000);
    let quote = rail.quote(&payouts).await.unwrap();
    let parent = rail.build(&payouts, &quote).await.unwrap();
    rail.broadcast(&parent).await.unwrap();
    let fee = i64::try_from(parent.fee.units()).unwrap();
    chain.prioritise(parent.txid, -fee).await; // as if it paid nothing
    // Payee 0 spends its output at once, paying little: the pinning a payee can do.
    let payee = regtest::payee::spend_p2wpkh(
        &deserialize(&parent.raw).unwrap(),
        0,
        &recipient_key(10, 0),
        recipient(99, 0).1,
        200,
    );
    chain.call("sendrawtransaction", json!([bitcoin::consensus::encode::serialize_hex(&payee)])).await.unwrap();
    chain.mine(1).await;
    assert_eq!(rail.observe(&watch(&[&parent], None)).await.unwrap(), Observation::Pending);
    // A replacement would evict the payee's transaction and pay its fee: the rail says so.
    let Err(RailError::NotReplaceable(why)) = rail.bump(&payouts, &parent, &quote).await else {
        panic!("a parent others spend from is not replaced")
    };
    assert!(why.contains("1 transaction(s)"), "{why}");
    let fast = FeeQuote { fee_max: quote.fee_max, detail: FeeDetail::Bitcoin { sat_per_kvb: 5_000, vbytes: 0 } };
    let first = rail.accelerate(&parent, &[], &fast).await.unwrap();
    let first_tx: Transaction = deserialize(&first.raw).unwrap();
    assert_eq!(first_tx.input.len(), 1);
    assert_eq!(first_tx.input[0].previous_output.txid, txid(&parent), "the child spends the parent's change");
    assert!(first.spends_from(&parent.txid));
    rail.broadcast(&first).await.unwrap();
    // Still passed over (the test keeps the package out): a second child replaces the first,
    // paying more, and the first leaves the mempool.
    chain.prioritise(first.txid, -i64::try_from(first.fee.units()).unwrap()).await;
    chain.mine(1).await;
    let second = rail.accelerate(&parent, std::slice::from_ref(&first), &fast).await.unwrap();
    assert!(second.fee > first.fee, "{} > {}", second.fee, first.fee);
    assert_eq!(inputs(&second), inputs(&first), "the second child spends the same change");
    rail.broadcast(&second).await.unwrap();
    assert!(chain.transaction(first.txid).await.is_none(), "the first child was replaced");
    chain.mine(1).await;
    let children = vec![first.clone(), second.clone()];
    let watched = Watch { children, ..watch(&[&parent], None) };
    let Observation::Confirmed { txid, depth, fee_paid, .. } = rail.observe(&watched).await.unwrap() else {
        panic!("the parent is mined with its child")
    };
    // The fee paid is the parent's and the child's that was mined, not the replaced one's.
    assert_eq!((txid, depth, fee_paid), (parent.txid, 1, parent.fee.checked_add(second.fee).unwrap()));
    assert_eq!(chain.transaction(second.txid).await.unwrap().1, 1);
    for i in 1..3 {
        assert_eq!(chain.balance(&recipient(10, i).1).await, 300_000, "recipient {i} paid exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_pays_everything_back_to_the_wallet() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(5, 1).await;
    let payouts = batch(11, 2, |_| 1_000_000);
    let quote = rail.quote(&payouts).await.unwrap();
    let first = rail.build(&payouts, &quote).await.unwrap();
    rail.broadcast(&first).await.unwrap();
    chain.prioritise(first.txid, -100_000_000).await;
    let cancel = rail.cancel(&first, &quote).await.unwrap();
    assert_eq!(inputs(&cancel), inputs(&first));
    rail.broadcast(&cancel).await.unwrap();
    chain.mine(1).await;
    let Observation::Confirmed { txid, .. } = rail.observe(&watch(&[&first, &cancel], None)).await.unwrap() else {
        panic!()
    };
    assert_eq!(txid, cancel.txid);
    assert_eq!(rail.wallet_balance().await.unwrap(), 5_000_000_000 - u64::try_from(cancel.fee.units()).unwrap());
    assert_eq!(chain.balance(&recipient(11, 0).1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_is_observed_and_a_conflict_mined_in_its_place_is_named() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(6, 1).await;
    let payouts = batch(12, 4, |_| 100_000);
    let quote = rail.quote(&payouts).await.unwrap();
    let tx = rail.build(&payouts, &quote).await.unwrap();
    rail.broadcast(&tx).await.unwrap();
    chain.mine(1).await;
    let Observation::Confirmed { block, depth: 1, .. } = rail.observe(&watch(&[&tx], None)).await.unwrap() else {
        panic!()
    };
    // The block leaves the best chain (a longer branch without it): the transaction is back
    // in the mempool, and the rail says the block it was seen in is gone.
    chain.rt.reorg(1, &ScriptBuf::new_op_return([1u8])).await;
    assert_eq!(rail.observe(&watch(&[&tx], Some(block))).await.unwrap(), Observation::ReorgedOut);
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Pending);
    chain.mine(1).await;
    assert!(matches!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Confirmed { depth: 1, .. }));

    // Now a branch whose block holds a conflict instead: someone else with the hot wallet's
    // key spent the same coin (a second rail on the same key, which railyard's journal does
    // not reach). The first is reorged out for good, and the conflict is named.
    let other = BitcoinRail::new(chain.config(), &wallet_key(6)).unwrap();
    let next = batch(13, 1, |_| 70_000);
    let next_quote = rail.quote(&next).await.unwrap();
    let mine = rail.build(&next, &next_quote).await.unwrap();
    rail.broadcast(&mine).await.unwrap();
    let conflict = other.cancel(&mine, &next_quote).await.unwrap();
    let conflict_tx: Transaction = deserialize(&conflict.raw).unwrap();
    let payout = ScriptBuf::new_op_return([2u8]);
    let first = chain.rt.mine_on(chain.rt.tip().await, vec![conflict_tx], &payout).await;
    chain.rt.mine_on(first, vec![], &payout).await;
    let Observation::Replaced { by, depth } = rail.observe(&watch(&[&mine], None)).await.unwrap() else {
        panic!("replaced")
    };
    assert_eq!((by, depth), (conflict.txid, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_and_journaled_spends_are_never_selected_again() {
    let chain = Chain::new().await;
    let rail = chain.funded_rail(7, 3).await;
    let payouts = batch(14, 2, |_| 50_000);
    let quote = rail.quote(&payouts).await.unwrap();
    let signed = rail.build(&payouts, &quote).await.unwrap();
    // A flipped bit in the signature: Core's script interpreter refuses it.
    let mut tx: Transaction = deserialize(&signed.raw).unwrap();
    let mut witness: Vec<Vec<u8>> = tx.input[0].witness.to_vec();
    witness[0][10] ^= 1;
    tx.input[0].witness = bitcoin::Witness::from_slice(&witness);
    let forged = SignedTx { raw: bitcoin::consensus::serialize(&tx), ..signed.clone() };
    // A second settlement signed before the first reaches the chain never spends its coins.
    let second = batch(17, 2, |_| 40_000);
    let second = rail.build(&second, &rail.quote(&second).await.unwrap()).await.unwrap();
    assert!(inputs(&second).iter().all(|input| !inputs(&signed).contains(input)), "no input selected twice");
    let Err(RailError::Rejected(why)) = rail.broadcast(&forged).await else { panic!("refused") };
    assert!(why.contains("script") || why.contains("signature"), "{why}");

    // A restart: a new rail on the same key. Told the journaled spend, it builds on other
    // coins; not told (as a wallet that trusted the chain alone would be), it picks the same
    // coin and the two settlements conflict.
    let restarted = BitcoinRail::new(chain.config(), &wallet_key(7)).unwrap();
    restarted.recover_spends(std::slice::from_ref(&signed.spend)).unwrap();
    let next = batch(15, 2, |_| 60_000);
    let next_quote = restarted.quote(&next).await.unwrap();
    let after = restarted.build(&next, &next_quote).await.unwrap();
    assert!(inputs(&after).iter().all(|input| !inputs(&signed).contains(input)), "no input selected twice");
    let naive = BitcoinRail::new(chain.config(), &wallet_key(7)).unwrap();
    let naive_tx = naive.build(&next, &naive.quote(&next).await.unwrap()).await.unwrap();
    assert!(inputs(&naive_tx).iter().any(|input| inputs(&signed).contains(input)));
    // The journaled bytes, broadcast after the restart, are the ones that confirm.
    restarted.broadcast(&signed).await.unwrap();
    restarted.broadcast(&after).await.unwrap();
    chain.mine(1).await;
    for tx in [&signed, &after] {
        assert!(matches!(restarted.observe(&watch(&[tx], None)).await.unwrap(), Observation::Confirmed { .. }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_or_refuses_the_credentials_is_an_error_not_a_crash() {
    let chain = Chain::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut down = chain.config();
    down.rpc_url = format!("http://127.0.0.1:{port}");
    down.request_timeout = Duration::from_millis(500);
    // Made without I/O: a node down at start makes the rail unavailable, not railyard.
    let rail = BitcoinRail::new(down, &wallet_key(8)).unwrap();
    assert_eq!(rail.health().await, rails::Health::Down);
    assert!(matches!(rail.quote(&batch(16, 1, |_| 10_000)).await, Err(RailError::Unavailable(_))));
    let mut wrong = chain.config();
    wrong.auth = RpcAuth::Password { user: USER.into(), password: "not-it".to_owned().into() };
    let rail = BitcoinRail::new(wrong, &wallet_key(8)).unwrap();
    let Err(RailError::Config(why)) = rail.quote(&batch(16, 1, |_| 10_000)).await else { panic!("refused") };
    assert!(why.contains("credentials"), "{why}");
    assert!(!why.contains("not-it"), "the password is never echoed");
    // A key for another network is a configuration error, and Debug never shows a key.
    let mainnet = WalletKey::new(&Xpriv::new_master(Network::Bitcoin, &[9; 32]).unwrap().to_string());
    assert!(matches!(BitcoinRail::new(chain.config(), &mainnet), Err(RailError::Config(_))));
    assert_eq!(format!("{mainnet:?}"), "WalletKey(***)");
    assert!(!format!("{:?}", chain.config()).contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_reads_the_chain_from_its_birth_height() {
    let chain = Chain::new().await;
    chain.mine(120).await;
    let young =
        |birth_height| BitcoinRail::new(BitcoinConfig { birth_height, ..chain.config() }, &wallet_key(9)).unwrap();
    let rail = young(115);
    let address = rail.receive_address();
    chain.call("generatetoaddress", json!([2, address])).await.unwrap();
    chain.mine(100).await;
    // Born before its coins: it sees both (read from block 115, not from genesis).
    assert_eq!(rail.wallet_balance().await.unwrap(), 2 * 5_000_000_000);
    // Born after them (a wrong birth height): it cannot see them; the birth height is a promise.
    assert_eq!(young(200).wallet_balance().await.unwrap(), 0);
    // And a wallet that has synced follows the chain on from there.
    let payouts = batch(18, 2, |_| 25_000);
    let tx = rail.build(&payouts, &rail.quote(&payouts).await.unwrap()).await.unwrap();
    rail.broadcast(&tx).await.unwrap();
    chain.mine(1).await;
    assert!(matches!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Confirmed { depth: 1, .. }));
}
