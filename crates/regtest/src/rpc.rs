//! The subset of Bitcoin Core's JSON-RPC the Bitcoin rail uses, served over real HTTP on
//! 127.0.0.1 with HTTP Basic auth, answering as Core does (result / error with Core's codes,
//! HTTP 500 on an error). What it cannot know — a fee estimate from history — it answers from
//! what the test set (`Node::set_fee_rate`).
//!
//! Methods: getblockchaininfo, getblockcount, getbestblockhash, getblockhash, getblock
//! (verbosity 0 and 1), getblockheader (verbose), getrawtransaction (verbose or not),
//! sendrawtransaction, getmempoolentry, getrawmempool, gettxout, estimatesmartfee, and for tests
//! generatetoaddress, prioritisetransaction, submitblock and scantxoutset (`raw()` descriptors).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{BlockHash, OutPoint, Txid};
use serde_json::{Value, json};

use crate::{Node, NodeError, TxStatus};

/// Core's error codes.
const MISC_ERROR: i64 = -1;
const INVALID_PARAMETER: i64 = -8;
const INVALID_ADDRESS_OR_KEY: i64 = -5;
const DESERIALIZATION_ERROR: i64 = -22;
const VERIFY_REJECTED: i64 = -26;
const VERIFY_ALREADY_IN_CHAIN: i64 = -27;
const METHOD_NOT_FOUND: i64 = -32601;

#[derive(Clone)]
struct Served {
    node: Arc<Mutex<Node>>,
    authorization: String,
}

/// A running RPC server; stops when dropped.
#[derive(Debug)]
pub struct Rpc {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Rpc {
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

/// Serves `node` on 127.0.0.1 (a free port) for `user` / `password`.
pub async fn serve(node: Arc<Mutex<Node>>, user: &str, password: &str) -> std::io::Result<Rpc> {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let served = Served { node, authorization: format!("Basic {credentials}") };
    let app = axum::Router::new().route("/", axum::routing::post(call)).with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            eprintln!("regtest rpc: {error}");
        }
    });
    Ok(Rpc { address, task })
}

struct RpcError(i64, String);

fn error(code: i64, message: impl Into<String>) -> RpcError {
    RpcError(code, message.into())
}

async fn call(State(served): State<Served>, headers: HeaderMap, body: String) -> (StatusCode, Json<Value>) {
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(served.authorization.as_str());
    if !authorized {
        return (StatusCode::UNAUTHORIZED, Json(Value::Null));
    }
    let request: Value = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "result": null, "error": { "code": -32700, "message": e.to_string() }, "id": null })),
            );
        }
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or("");
    let params = request.get("params").and_then(Value::as_array).cloned().unwrap_or_default();
    let outcome = {
        let mut node = served.node.lock().expect("node lock");
        dispatch(&mut node, method, &params)
    };
    match outcome {
        Ok(result) => (StatusCode::OK, Json(json!({ "result": result, "error": null, "id": id }))),
        Err(RpcError(code, message)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "result": null, "error": { "code": code, "message": message }, "id": id })),
        ),
    }
}

fn param(params: &[Value], i: usize) -> Option<&Value> {
    params.get(i).filter(|v| !v.is_null())
}

fn hash_param<T: std::str::FromStr>(params: &[Value], i: usize) -> Result<T, RpcError> {
    param(params, i)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| error(INVALID_PARAMETER, format!("parameter {i} must be a hex hash")))
}

fn verbosity(params: &[Value], i: usize) -> u64 {
    match param(params, i) {
        Some(Value::Bool(b)) => u64::from(*b),
        Some(v) => v.as_u64().unwrap_or(1),
        None => 1,
    }
}

fn dispatch(node: &mut Node, method: &str, params: &[Value]) -> Result<Value, RpcError> {
    match method {
        "getblockchaininfo" => Ok(json!({
            "chain": "regtest", "blocks": node.height(), "headers": node.height(),
            "bestblockhash": node.tip().to_string(), "initialblockdownload": false,
        })),
        "getblockcount" => Ok(json!(node.height())),
        "getbestblockhash" => Ok(json!(node.tip().to_string())),
        "getblockhash" => {
            let height = param(params, 0).and_then(Value::as_u64).ok_or_else(|| error(INVALID_PARAMETER, "height"))?;
            let hash = u32::try_from(height).ok().and_then(|h| node.block_hash(h));
            hash.map(|h| json!(h.to_string())).ok_or_else(|| error(INVALID_PARAMETER, "Block height out of range"))
        }
        "getblock" | "getblockheader" => {
            let hash: BlockHash = hash_param(params, 0)?;
            let (block, height) = node.block(&hash).ok_or_else(|| error(INVALID_ADDRESS_OR_KEY, "Block not found"))?;
            let verbose = if method == "getblock" { verbosity(params, 1) } else { verbosity(params, 1).min(1) };
            if verbose == 0 {
                return Ok(json!(if method == "getblock" {
                    serialize_hex(block)
                } else {
                    serialize_hex(&block.header)
                }));
            }
            // A block off the active chain has -1 confirmations, as in Core.
            let confirmations = if node.is_active(&hash) { i64::from(node.height() - height + 1) } else { -1 };
            let mut answer = json!({
                "hash": hash.to_string(), "height": height, "confirmations": confirmations,
                "previousblockhash": block.header.prev_blockhash.to_string(), "time": block.header.time,
            });
            if method == "getblock" {
                answer["tx"] = json!(block.txdata.iter().map(|t| t.compute_txid().to_string()).collect::<Vec<_>>());
            }
            if let Some(next) = node.block_hash(height + 1).filter(|_| confirmations > 0) {
                answer["nextblockhash"] = json!(next.to_string());
            }
            Ok(answer)
        }
        "getrawtransaction" => {
            let txid: Txid = hash_param(params, 0)?;
            let tx = node.transaction(&txid).ok_or_else(|| {
                error(
                    INVALID_ADDRESS_OR_KEY,
                    "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
                )
            })?;
            let verbose = param(params, 1).is_some_and(|v| v.as_bool().unwrap_or_else(|| v.as_u64().unwrap_or(0) > 0));
            if !verbose {
                return Ok(json!(serialize_hex(&tx)));
            }
            let mut answer = json!({ "txid": txid.to_string(), "hex": serialize_hex(&tx), "vsize": tx.vsize() });
            if let TxStatus::Confirmed { block, depth, .. } = node.status(&txid) {
                answer["blockhash"] = json!(block.to_string());
                answer["confirmations"] = json!(depth);
            }
            Ok(answer)
        }
        "sendrawtransaction" => {
            let hex = param(params, 0).and_then(Value::as_str).ok_or_else(|| error(INVALID_PARAMETER, "hexstring"))?;
            let tx: bitcoin::Transaction =
                deserialize_hex(hex).map_err(|_| error(DESERIALIZATION_ERROR, "TX decode failed"))?;
            let txid = tx.compute_txid();
            if node.mempool().get(&txid).is_some() {
                return Ok(json!(txid.to_string()));
            }
            match node.send(tx) {
                Ok(txid) => Ok(json!(txid.to_string())),
                Err(NodeError::Rejected(reason)) if reason.starts_with("transaction already in block chain") => {
                    Err(error(VERIFY_ALREADY_IN_CHAIN, reason))
                }
                Err(NodeError::Rejected(reason)) => Err(error(VERIFY_REJECTED, reason)),
                Err(other) => Err(error(MISC_ERROR, other.to_string())),
            }
        }
        "getmempoolentry" => {
            let txid: Txid = hash_param(params, 0)?;
            let entry =
                node.mempool().get(&txid).ok_or_else(|| error(INVALID_ADDRESS_OR_KEY, "Transaction not in mempool"))?;
            Ok(json!({
                "vsize": entry.vsize,
                "fees": { "base": entry.fee.to_btc() },
                "descendantcount": node.mempool().descendant_count(txid),
                "bip125-replaceable": true,
            }))
        }
        "getrawmempool" => Ok(json!(node.mempool().txids().iter().map(ToString::to_string).collect::<Vec<_>>())),
        "gettxout" => {
            let txid: Txid = hash_param(params, 0)?;
            let vout = param(params, 1).and_then(Value::as_u64).ok_or_else(|| error(INVALID_PARAMETER, "n"))?;
            let outpoint = OutPoint { txid, vout: u32::try_from(vout).map_err(|_| error(INVALID_PARAMETER, "n"))? };
            let include_mempool = param(params, 2).and_then(Value::as_bool).unwrap_or(true);
            Ok(node.coin(&outpoint, include_mempool).map_or(Value::Null, |(output, confirmations)| {
                json!({
                    "bestblock": node.tip().to_string(), "confirmations": confirmations, "value": output.value.to_btc(),
                    "scriptPubKey": { "hex": hex::encode(output.script_pubkey.as_bytes()) },
                })
            }))
        }
        "estimatesmartfee" => {
            let target =
                param(params, 0).and_then(Value::as_u64).ok_or_else(|| error(INVALID_PARAMETER, "conf_target"))?;
            // sat/vB to BTC/kvB: × 1000 / 100,000,000.
            Ok(match node.fee_rate(target) {
                Some(rate) => {
                    json!({ "feerate": bitcoin::Amount::from_sat(rate * 1000).to_btc(), "blocks": target.max(1) })
                }
                None => json!({ "errors": ["Insufficient data or no feerate found"], "blocks": 0 }),
            })
        }
        "generatetoaddress" => {
            let count = param(params, 0).and_then(Value::as_u64).ok_or_else(|| error(INVALID_PARAMETER, "nblocks"))?;
            let text = param(params, 1).and_then(Value::as_str).ok_or_else(|| error(INVALID_PARAMETER, "address"))?;
            let address = text
                .parse::<bitcoin::Address<_>>()
                .ok()
                .and_then(|a| a.require_network(bitcoin::Network::Regtest).ok())
                .ok_or_else(|| error(INVALID_ADDRESS_OR_KEY, "Error: Invalid address"))?;
            let count = u32::try_from(count).map_err(|_| error(INVALID_PARAMETER, "nblocks"))?;
            let hashes = node.mine(count, &address.script_pubkey()).map_err(|e| error(MISC_ERROR, e.to_string()))?;
            Ok(json!(hashes.iter().map(ToString::to_string).collect::<Vec<_>>()))
        }
        "prioritisetransaction" => {
            let txid: Txid = hash_param(params, 0)?;
            let delta =
                param(params, 2).and_then(Value::as_i64).ok_or_else(|| error(INVALID_PARAMETER, "fee_delta"))?;
            node.prioritise(txid, delta);
            Ok(json!(true))
        }
        "submitblock" => {
            let hex = param(params, 0).and_then(Value::as_str).ok_or_else(|| error(INVALID_PARAMETER, "hexdata"))?;
            let block: bitcoin::Block =
                deserialize_hex(hex).map_err(|_| error(DESERIALIZATION_ERROR, "Block decode failed"))?;
            // As Core: null when accepted, else the reason as the result.
            match node.submit_block(block) {
                Ok(_) => Ok(Value::Null),
                Err(NodeError::BlockRejected(_, reason)) => Ok(json!(reason)),
                Err(other) => Ok(json!(other.to_string())),
            }
        }
        "scantxoutset" => {
            // Only `start` with `raw(<script hex>)` descriptors, as strings or {"desc": …}.
            let descriptors =
                param(params, 1).and_then(Value::as_array).ok_or_else(|| error(INVALID_PARAMETER, "scanobjects"))?;
            let mut total = bitcoin::Amount::ZERO;
            for descriptor in descriptors {
                let text = descriptor.as_str().or_else(|| descriptor["desc"].as_str()).unwrap_or_default();
                let script = text
                    .strip_prefix("raw(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|hex| hex::decode(hex).ok())
                    .ok_or_else(|| error(INVALID_PARAMETER, format!("only raw(<hex>) descriptors: {text}")))?;
                total += node.balance(&bitcoin::ScriptBuf::from_bytes(script));
            }
            Ok(json!({ "success": true, "height": node.height(), "total_amount": total.to_btc() }))
        }
        other => Err(error(METHOD_NOT_FOUND, format!("Method not found: {other}"))),
    }
}
