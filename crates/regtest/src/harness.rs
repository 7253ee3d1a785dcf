//! One handle on a regtest chain for the Bitcoin tests: this crate's node, or a real
//! `bitcoind -regtest` when `BITCOIND_EXE` names its binary. The tests drive either through
//! Core's JSON-RPC only — mining (`generatetoaddress`, and `submitblock` with blocks built
//! here for a competing branch), `prioritisetransaction`, `getrawtransaction`,
//! `scantxoutset` — so the same test runs unchanged on both. One thing Core cannot be told is a
//! fee estimate (it learns estimates from fee history): `set_fee_rate` works on this crate's
//! node only and says so.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{BlockHash, ScriptBuf, Transaction, Txid};
use serde_json::{Value, json};

use crate::{Node, build_block, subsidy};

/// The environment variable naming a `bitcoind` binary to test against.
pub const BITCOIND_EXE: &str = "BITCOIND_EXE";

enum Backend {
    InProcess { node: Arc<Mutex<Node>>, _rpc: crate::rpc::Rpc },
    Bitcoind { child: Child, _dir: tempfile::TempDir },
}

pub struct Regtest {
    backend: Backend,
    url: String,
    user: String,
    password: String,
    http: reqwest::Client,
    /// Makes the coinbases of blocks built here distinct.
    extra_nonce: AtomicU64,
}

impl std::fmt::Debug for Regtest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Regtest").field("url", &self.url).field("bitcoind", &self.is_bitcoind()).finish()
    }
}

impl Drop for Regtest {
    fn drop(&mut self) {
        if let Backend::Bitcoind { child, .. } = &mut self.backend {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An address no one can spend from (P2WSH of `OP_RETURN`): where blocks are mined when no
/// wallet should get the reward.
pub fn burn_address() -> String {
    let script = ScriptBuf::new_op_return([0u8]);
    bitcoin::Address::p2wsh(&script, bitcoin::Network::Regtest).to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("bound").port()
}

impl Regtest {
    /// A fresh chain (genesis only) whose RPC takes `user` / `password`: `bitcoind` when
    /// `BITCOIND_EXE` is set, else this crate's node.
    pub async fn start(user: &str, password: &str) -> Regtest {
        let http = reqwest::Client::new();
        let (backend, url) = match std::env::var_os(BITCOIND_EXE) {
            Some(exe) => {
                let dir = tempfile::tempdir().expect("a data directory");
                let port = free_port();
                let child = Command::new(&exe)
                    .arg("-regtest")
                    .arg(format!("-datadir={}", dir.path().display()))
                    .arg(format!("-rpcport={port}"))
                    .arg(format!("-port={}", free_port()))
                    .args(["-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-listen=0", "-dnsseed=0", "-fixedseeds=0"])
                    .args(["-server=1", "-disablewallet=1", "-txindex=1", "-printtoconsole=0"])
                    .arg(format!("-rpcuser={user}"))
                    .arg(format!("-rpcpassword={password}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{BITCOIND_EXE}={}: {e}", exe.to_string_lossy()));
                (Backend::Bitcoind { child, _dir: dir }, format!("http://127.0.0.1:{port}"))
            }
            None => {
                let node = Arc::new(Mutex::new(Node::new().expect("regtest node")));
                let rpc = crate::rpc::serve(node.clone(), user, password).await.expect("rpc");
                let url = rpc.url();
                (Backend::InProcess { node, _rpc: rpc }, url)
            }
        };
        let chain = Regtest {
            backend,
            url,
            user: user.to_owned(),
            password: password.to_owned(),
            http,
            extra_nonce: AtomicU64::new(1 << 40),
        };
        // bitcoind answers "loading" (or nothing) for a moment after it starts.
        let deadline = Instant::now() + Duration::from_secs(60);
        while chain.call("getblockchaininfo", json!([])).await.is_err() {
            assert!(Instant::now() < deadline, "the regtest node did not answer within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        chain
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn is_bitcoind(&self) -> bool {
        matches!(self.backend, Backend::Bitcoind { .. })
    }

    /// This crate's node, for what only it can do (`set_fee_rate`); `None` on bitcoind.
    pub fn node(&self) -> Option<&Arc<Mutex<Node>>> {
        match &self.backend {
            Backend::InProcess { node, .. } => Some(node),
            Backend::Bitcoind { .. } => None,
        }
    }

    /// A JSON-RPC call: the result, or Core's error object (or a transport error as text).
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, Value> {
        let body = json!({ "jsonrpc": "1.0", "id": 1, "method": method, "params": params });
        let response = self
            .http
            .post(&self.url)
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .map_err(|e| json!(e.to_string()))?;
        let answer: Value = response.json().await.map_err(|e| json!(e.to_string()))?;
        if answer["error"].is_null() { Ok(answer["result"].clone()) } else { Err(answer["error"].clone()) }
    }

    /// Mines `count` blocks paying `address`, taking what Core's block assembly takes.
    pub async fn mine(&self, count: u32, address: &str) -> Vec<BlockHash> {
        let hashes = self.call("generatetoaddress", json!([count, address])).await.expect("generatetoaddress");
        hashes.as_array().expect("hashes").iter().map(|h| h.as_str().expect("hash").parse().expect("hash")).collect()
    }

    /// Mines a block to `burn_address` every `every` until the task is aborted.
    pub fn spawn_miner(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let chain = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                chain.mine(1, &burn_address()).await;
            }
        })
    }

    pub async fn prioritise(&self, txid: Txid, delta: i64) {
        self.call("prioritisetransaction", json!([txid.to_string(), 0, delta])).await.expect("prioritise");
    }

    pub async fn send(&self, tx: &Transaction) -> Result<Txid, Value> {
        let txid = self.call("sendrawtransaction", json!([serialize_hex(tx)])).await?;
        Ok(txid.as_str().expect("a txid").parse().expect("a txid"))
    }

    /// The transaction as the node has it, and its confirmations (0: in the mempool).
    pub async fn transaction(&self, txid: Txid) -> Option<(Transaction, u64)> {
        let answer = self.call("getrawtransaction", json!([txid.to_string(), true])).await.ok()?;
        let tx: Transaction = deserialize_hex(answer["hex"].as_str()?).ok()?;
        Some((tx, answer["confirmations"].as_u64().unwrap_or(0)))
    }

    /// What the confirmed outputs paying `script` hold, in sat (`scantxoutset`).
    pub async fn balance(&self, script: &ScriptBuf) -> u64 {
        let descriptor = format!("raw({})", hex::encode(script.as_bytes()));
        let answer = self.call("scantxoutset", json!(["start", [descriptor]])).await.expect("scantxoutset");
        // Core's BTC amount (a JSON number); `from_btc` rounds it to whole satoshis exactly.
        let btc = answer["total_amount"].as_f64().expect("total_amount");
        bitcoin::Amount::from_btc(btc).expect("an amount").to_sat()
    }

    pub async fn tip(&self) -> BlockHash {
        let hash = self.call("getbestblockhash", json!([])).await.expect("getbestblockhash");
        hash.as_str().expect("a hash").parse().expect("a hash")
    }

    /// Builds a block on `parent` holding `txs` (its coinbase pays the subsidy to `payout`;
    /// fees are left unclaimed, which is valid) and submits it: Core switches to its branch
    /// when the branch has the most work.
    pub async fn mine_on(&self, parent: BlockHash, txs: Vec<Transaction>, payout: &ScriptBuf) -> BlockHash {
        let header = self.call("getblockheader", json!([parent.to_string(), true])).await.expect("parent header");
        let height = u32::try_from(header["height"].as_u64().expect("height")).expect("height") + 1;
        let time = u32::try_from(header["time"].as_u64().expect("time")).expect("time") + 1;
        let nonce = self.extra_nonce.fetch_add(1, Ordering::SeqCst);
        let block = build_block(parent, height, time, txs, subsidy(height), payout, nonce);
        let hash = block.block_hash();
        let verdict = self.call("submitblock", json!([serialize_hex(&block)])).await.expect("submitblock");
        assert!(verdict.is_null() || verdict == "duplicate", "block {hash} refused: {verdict}");
        hash
    }

    /// Mines `depth + 1` empty blocks on the block `depth` below the tip: the branch with
    /// the most work wins, and the transactions of the blocks left go back to the mempool.
    pub async fn reorg(&self, depth: u32, payout: &ScriptBuf) -> Vec<BlockHash> {
        let height = self.call("getblockcount", json!([])).await.expect("getblockcount").as_u64().expect("height");
        let fork = self.call("getblockhash", json!([height.saturating_sub(u64::from(depth))])).await.expect("hash");
        let mut parent: BlockHash = fork.as_str().expect("a hash").parse().expect("a hash");
        let mut branch = Vec::new();
        for _ in 0..=depth {
            parent = self.mine_on(parent, Vec::new(), payout).await;
            branch.push(parent);
        }
        branch
    }

    /// Sets what `estimatesmartfee` answers for `target` blocks, in sat/vB. Only this crate's
    /// node can be told (Core estimates from the fees it has seen confirm): `false` on bitcoind.
    pub fn set_fee_rate(&self, target: u64, sat_per_vb: u64) -> bool {
        match self.node() {
            Some(node) => {
                node.lock().expect("node lock").set_fee_rate(target, sat_per_vb);
                true
            }
            None => false,
        }
    }
}
