//! `railyard devnet` as a new user runs it: two real anvil chains started, contracts deployed,
//! the hot wallet and pools funded, and a batch submitted over HTTP pays on chain. A SIGINT to
//! the command stops the server and both nodes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::sol_types::SolCall;
use serde_json::{Value, json};

alloy::sol! {
    function balanceOf(address owner) view returns (uint256);
}

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devnet_starts_chains_deploys_funds_and_pays_on_chain() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .current_dir(REPO)
        .env_remove("RUST_LOG")
        .arg("devnet")
        .arg("--data")
        .arg(data.path())
        .args(["--l1-port", "0", "--l2-port", "0", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut url, mut admin, mut chains) = (None, None, Vec::new());
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("devnet: L1 (chain 31337) at ") {
            let (l1, l2) = rest.split_once(", L2 (chain 31338) at ").unwrap();
            chains = vec![(31_337u64, l1.to_owned()), (31_338, l2.to_owned())];
        } else if let Some(rest) = line.strip_prefix("railyard listening on ") {
            url = Some(rest.to_owned());
        } else if let Some(key) = line.split("store it now): ").nth(1) {
            admin = Some(key.to_owned());
        } else if line.starts_with("railyard serving") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (url, admin) = (url.expect("serve listens"), admin.expect("an admin key"));
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{url}/v1/keys"))
        .bearer_auth(&admin)
        .json(&json!({ "role": "merchant", "merchant": 1, "label": "devnet" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let merchant = created["secret"].as_str().unwrap().to_owned();
    let destination = "0x8617e340b3d01fa5f11f306f4090fd50e238070d";
    let body = format!(
        "reference,amount,asset,destination,networks,class\nd-1,5,USDC,{destination},evm:31337|evm:31338,standard\n"
    );
    let accepted: Value = http
        .post(format!("{url}/v1/batches"))
        .bearer_auth(&merchant)
        .header("content-type", "text/csv")
        .header("idempotency-key", "devnet-1")
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payment = accepted["payments"][0]["id"].as_str().unwrap().to_owned();
    let mut view = Value::Null;
    for _ in 0..600 {
        view = http
            .get(format!("{url}/v1/payments/{payment}"))
            .bearer_auth(&merchant)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if view["state"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(view["state"], "settled", "{view}");
    let chain = view["settlement"]["chain_id"].as_u64().unwrap();
    let rpc = &chains.iter().find(|(id, _)| *id == chain).unwrap().1;
    let provider: RootProvider = RootProvider::new_http(rpc.parse().unwrap());
    let token: Address = "0x5FbDB2315678afecb367f032d93F642f64180aa3".parse().unwrap();
    let call = alloy::rpc::types::TransactionRequest::default()
        .to(token)
        .input(balanceOfCall { owner: destination.parse().unwrap() }.abi_encode().into());
    let balance = U256::from_be_slice(&provider.call(call).await.unwrap());
    assert_eq!(balance, U256::from(5_000_000u64), "5 USDC on chain {chain}");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let stopped = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(stopped.success(), "{stopped}");
    for (_, rpc) in &chains {
        assert!(
            RootProvider::<alloy::network::Ethereum>::new_http(rpc.parse().unwrap()).get_chain_id().await.is_err(),
            "{rpc} still answers"
        );
    }
}
