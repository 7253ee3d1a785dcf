//! The regtest node: blocks checked by Bitcoin Core's validation engine, a mempool with BIP 125
//! replacement, reorgs. These are the node's own tests; the Bitcoin rail's run on top of it.

use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness, absolute,
    transaction,
};
use regtest::{Node, NodeError, TxStatus};

struct Key {
    secret: SecretKey,
    public: CompressedPublicKey,
}

impl Key {
    fn new(seed: u8) -> Key {
        let secret = SecretKey::from_slice(&[seed; 32]).unwrap();
        let public = CompressedPublicKey(secret.public_key(&Secp256k1::new()));
        Key { secret, public }
    }

    fn script(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.public.wpubkey_hash())
    }
}

/// A transaction spending `inputs` (all the key's P2WPKH outputs) to `outputs`, signed.
fn spend(key: &Key, inputs: &[(OutPoint, Amount)], outputs: Vec<TxOut>, rbf: bool) -> Transaction {
    let sequence = if rbf { Sequence::ENABLE_RBF_NO_LOCKTIME } else { Sequence::MAX };
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(outpoint, _)| TxIn { previous_output: *outpoint, sequence, ..TxIn::default() })
            .collect(),
        output: outputs,
    };
    let secp = Secp256k1::new();
    let script = key.script();
    let mut cache = SighashCache::new(&mut tx);
    for (i, (_, value)) in inputs.iter().enumerate() {
        let sighash = cache.p2wpkh_signature_hash(i, &script, *value, EcdsaSighashType::All).unwrap();
        let signature = secp.sign_ecdsa(&Message::from(sighash), &key.secret);
        let signature = bitcoin::ecdsa::Signature { signature, sighash_type: EcdsaSighashType::All };
        *cache.witness_mut(i).unwrap() = Witness::p2wpkh(&signature, &key.public.0);
    }
    tx
}

/// A node with 101 blocks mined to `key`: one coinbase is mature.
fn funded(key: &Key) -> (Node, OutPoint, Amount) {
    let mut node = Node::new().unwrap();
    node.mine(101, &key.script()).unwrap();
    let (outpoint, output) = node.unspent(&key.script()).into_iter().next().expect("a mature coinbase");
    (node, outpoint, output.value)
}

#[test]
fn a_batch_of_100_outputs_confirms_with_every_output_checked() {
    let key = Key::new(1);
    let (mut node, coin, value) = funded(&key);
    let recipients: Vec<Key> = (10..110).map(Key::new).collect();
    let mut outputs: Vec<TxOut> = recipients
        .iter()
        .enumerate()
        .map(|(i, r)| TxOut { value: Amount::from_sat(10_000 + i as u64), script_pubkey: r.script() })
        .collect();
    let paid: Amount = outputs.iter().map(|o| o.value).sum();
    let fee = Amount::from_sat(5_000);
    outputs.push(TxOut { value: value - paid - fee, script_pubkey: key.script() });
    let tx = spend(&key, &[(coin, value)], outputs, true);
    let txid = node.send(tx).unwrap();
    assert_eq!(node.status(&txid), TxStatus::Mempool);
    assert_eq!(node.mempool().get(&txid).unwrap().fee, fee);
    node.mine(1, &key.script()).unwrap();
    assert!(matches!(node.status(&txid), TxStatus::Confirmed { depth: 1, .. }));
    for (i, recipient) in recipients.iter().enumerate() {
        assert_eq!(node.balance(&recipient.script()), Amount::from_sat(10_000 + i as u64), "output {i}");
    }
    assert!(node.mempool().is_empty());
}

#[test]
fn replacements_follow_bip125_and_exactly_one_version_confirms() {
    let key = Key::new(2);
    let (mut node, coin, value) = funded(&key);
    let to = Key::new(3).script();
    let version = |fee: u64, rbf: bool| {
        let outputs = vec![TxOut { value: value - Amount::from_sat(fee), script_pubkey: to.clone() }];
        spend(&key, &[(coin, value)], outputs, rbf)
    };
    let first = node.send(version(1_000, true)).unwrap();
    // A replacement paying less (or the same) is refused; one paying enough more evicts it.
    let low = node.send(version(1_000, true)).map(|_| ());
    assert!(matches!(low, Err(NodeError::Rejected(ref r)) if r.contains("txn-already-in-mempool")), "{low:?}");
    let cheaper = node.send(version(900, true));
    assert!(matches!(cheaper, Err(NodeError::Rejected(ref r)) if r.starts_with("insufficient fee")), "{cheaper:?}");
    let too_little_more = node.send(version(1_050, true));
    assert!(
        matches!(too_little_more, Err(NodeError::Rejected(ref r)) if r.contains("not enough additional fees")),
        "{too_little_more:?}"
    );
    let bumped = node.send(version(2_000, true)).unwrap();
    assert_eq!(node.status(&first), TxStatus::Unknown, "the original is evicted");
    assert_eq!(node.spender(&coin), Some(bumped));
    node.mine(1, &key.script()).unwrap();
    assert!(matches!(node.status(&bumped), TxStatus::Confirmed { .. }));
    assert_eq!(node.status(&first), TxStatus::Unknown);
    assert_eq!(node.balance(&to), value - Amount::from_sat(2_000));

    // A transaction that does not signal replacement cannot be replaced.
    let (coin, value) = node.unspent(&key.script()).into_iter().next().map(|(o, t)| (o, t.value)).unwrap();
    let outputs = |fee: u64| vec![TxOut { value: value - Amount::from_sat(fee), script_pubkey: to.clone() }];
    node.send(spend(&key, &[(coin, value)], outputs(1_000), false)).unwrap();
    let refused = node.send(spend(&key, &[(coin, value)], outputs(50_000), true));
    assert!(matches!(refused, Err(NodeError::Rejected(ref r)) if r.starts_with("txn-mempool-conflict")), "{refused:?}");
}

#[test]
fn an_invalid_signature_is_refused_by_the_mempool_and_by_consensus() {
    let key = Key::new(4);
    let (mut node, coin, value) = funded(&key);
    let outputs = vec![TxOut { value: value - Amount::from_sat(1_000), script_pubkey: Key::new(5).script() }];
    let mut tx = spend(&key, &[(coin, value)], outputs, true);
    // Another key's signature over the same transaction.
    let forged = spend(&Key::new(6), &[(coin, value)], tx.output.clone(), true);
    let mut witness: Vec<Vec<u8>> = forged.input[0].witness.to_vec();
    witness[1] = key.public.to_bytes().to_vec();
    tx.input[0].witness = Witness::from_slice(&witness);
    let refused = node.send(tx.clone());
    assert!(
        matches!(refused, Err(NodeError::Rejected(ref r)) if r.starts_with("mandatory-script-verify-flag-failed")),
        "{refused:?}"
    );
    // Handed to Bitcoin Core's validation engine in a block, it is refused too.
    let height = node.height();
    let block = node.mine_on(node.tip(), vec![tx], &key.script());
    assert!(matches!(block, Err(NodeError::BlockRejected(..))), "{block:?}");
    eprintln!("consensus: {}", block.unwrap_err());
    assert_eq!(node.height(), height);
    // Spending a coinbase before maturity, or a coin that is not there, is refused.
    let young = node.block(&node.tip()).unwrap().0.txdata[0].compute_txid();
    let young = OutPoint { txid: young, vout: 0 };
    let premature = node.send(spend(
        &key,
        &[(young, value)],
        vec![TxOut { value: Amount::from_sat(5_000), script_pubkey: key.script() }],
        true,
    ));
    assert!(matches!(premature, Err(NodeError::Rejected(ref r)) if r.contains("premature")), "{premature:?}");
}

#[test]
fn a_reorg_takes_a_confirmed_transaction_back_to_the_mempool_or_replaces_it() {
    let key = Key::new(7);
    let (mut node, coin, value) = funded(&key);
    let to = Key::new(8).script();
    let pay = |fee: u64, script: &ScriptBuf| {
        spend(
            &key,
            &[(coin, value)],
            vec![TxOut { value: value - Amount::from_sat(fee), script_pubkey: script.clone() }],
            true,
        )
    };
    let txid = node.send(pay(1_000, &to)).unwrap();
    let mined = node.mine(1, &key.script()).unwrap();
    assert!(matches!(node.status(&txid), TxStatus::Confirmed { depth: 1, .. }));
    // The block that confirmed it leaves the best chain: the transaction is back in the mempool.
    node.reorg(1, &key.script()).unwrap();
    assert!(!node.is_active(&mined[0]), "Core's engine chose the longer branch");
    assert_eq!(node.status(&txid), TxStatus::Mempool);
    node.mine(1, &key.script()).unwrap();
    assert!(matches!(node.status(&txid), TxStatus::Confirmed { depth: 1, .. }));

    // A branch that confirms a conflicting spend instead: the original is gone for good and
    // the conflict names its spender.
    let thief = Key::new(9).script();
    let conflict = pay(3_000, &thief);
    let conflict_id = conflict.compute_txid();
    let fork = node.block_hash(node.height() - 1).unwrap();
    let first = node.mine_on(fork, vec![conflict], &key.script()).unwrap();
    node.mine_on(first, Vec::new(), &key.script()).unwrap();
    assert_eq!(node.status(&txid), TxStatus::Unknown);
    assert!(matches!(node.status(&conflict_id), TxStatus::Confirmed { depth: 2, .. }));
    assert_eq!(node.spender(&coin), Some(conflict_id));
    assert_eq!(node.balance(&to), Amount::ZERO);
}

/// Core's JSON-RPC over real HTTP: a call and its result or Core's error code.
async fn rpc(client: &reqwest::Client, url: &str, method: &str, params: serde_json::Value) -> (u16, serde_json::Value) {
    let body = serde_json::json!({ "jsonrpc": "1.0", "id": "t", "method": method, "params": params });
    let response = client.post(url).basic_auth("railyard", Some("secret")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpc_answers_as_core_does() {
    use serde_json::json;
    let key = Key::new(11);
    let (node, coin, value) = funded(&key);
    let node = std::sync::Arc::new(std::sync::Mutex::new(node));
    let server = regtest::rpc::serve(std::sync::Arc::clone(&node), "railyard", "secret").await.unwrap();
    let (client, url) = (reqwest::Client::new(), server.url());

    // Wrong credentials: 401, as Core.
    let refused = client.post(&url).basic_auth("railyard", Some("wrong")).body("{}").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    let (_, count) = rpc(&client, &url, "getblockcount", json!([])).await;
    assert_eq!(count["result"], 101);
    node.lock().unwrap().set_fee_rate(1, 25);
    let (_, fee) = rpc(&client, &url, "estimatesmartfee", json!([2])).await;
    assert_eq!(fee["result"]["feerate"], 0.00025, "25 sat/vB in BTC/kvB: {fee}");

    let to = Key::new(12).script();
    let tx =
        spend(&key, &[(coin, value)], vec![TxOut { value: value - Amount::from_sat(2_000), script_pubkey: to }], true);
    let hex = bitcoin::consensus::encode::serialize_hex(&tx);
    let (status, sent) = rpc(&client, &url, "sendrawtransaction", json!([hex])).await;
    assert_eq!(status, 200, "{sent}");
    let txid = sent["result"].as_str().unwrap().to_owned();
    assert_eq!(txid, tx.compute_txid().to_string());
    let (_, entry) = rpc(&client, &url, "getmempoolentry", json!([txid])).await;
    assert_eq!(entry["result"]["fees"]["base"], 0.00002);
    // The same bytes again are harmless; a conflicting spend that pays too little is -26.
    assert_eq!(rpc(&client, &url, "sendrawtransaction", json!([hex])).await.1["result"], json!(txid));
    let cheaper = spend(
        &key,
        &[(coin, value)],
        vec![TxOut { value: value - Amount::from_sat(1_500), script_pubkey: key.script() }],
        true,
    );
    let (status, error) =
        rpc(&client, &url, "sendrawtransaction", json!([bitcoin::consensus::encode::serialize_hex(&cheaper)])).await;
    assert_eq!((status, &error["error"]["code"]), (500, &json!(-26)), "{error}");

    node.lock().unwrap().mine(2, &key.script()).unwrap();
    let (_, raw) = rpc(&client, &url, "getrawtransaction", json!([txid, true])).await;
    assert_eq!(raw["result"]["confirmations"], 2, "{raw}");
    let block = raw["result"]["blockhash"].as_str().unwrap().to_owned();
    let (_, header) = rpc(&client, &url, "getblockheader", json!([block, true])).await;
    assert_eq!(header["result"]["confirmations"], 2);
    // After a reorg the block is off the best chain (-1 confirmations) and the transaction is
    // back in the mempool.
    node.lock().unwrap().reorg(2, &key.script()).unwrap();
    let (_, header) = rpc(&client, &url, "getblockheader", json!([block, true])).await;
    assert_eq!(header["result"]["confirmations"], -1);
    let (_, raw) = rpc(&client, &url, "getrawtransaction", json!([txid, 1])).await;
    assert!(raw["result"].get("confirmations").is_none(), "{raw}");
    let (_, pool) = rpc(&client, &url, "getrawmempool", json!([])).await;
    assert_eq!(pool["result"], json!([txid]));
    let (_, missing) = rpc(&client, &url, "getblockhash", json!([1_000])).await;
    assert_eq!(missing["error"]["code"], -8);
    let (_, unknown) = rpc(&client, &url, "walletpassphrase", json!([])).await;
    assert_eq!(unknown["error"]["code"], -32601);
}
