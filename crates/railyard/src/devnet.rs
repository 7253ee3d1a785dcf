//! `railyard devnet`: a new user's one command to real chains. It starts two local anvil nodes
//! (an L1, chain 31337, and an L2, chain 31338, each mining a block a second so settlements
//! reach finality), deploys the batch-transfer contract and the test stablecoin on both, mints
//! stablecoins to the hot wallet and approves the batch contract, writes the configuration
//! (RPC URLs, contract addresses, pools funded with what the wallet holds) to the data
//! directory, and runs `railyard serve` on it. The chains keep their state in the data
//! directory, so running it again resumes the same chains and the same journal.
//!
//! Keys are anvil's well-known development accounts: never use them anywhere else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, Bytes, TxKind, U256};
use alloy::providers::{Provider, RootProvider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use anyhow::{Context, bail};

/// anvil's account 0 deploys (so the contracts land at the addresses `config/devnet.toml`
/// names); account 1 is the hot wallet railyard signs with.
const DEPLOYER_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const HOT_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const BATCH_BYTECODE: &str = include_str!("../../../contracts/out/BatchTransfer.bin");
const TOKEN_BYTECODE: &str = include_str!("../../../contracts/out/TestStablecoin.bin");
const DEVNET_CONFIG: &str = include_str!("../../../config/devnet.toml");
/// USDC minted to the hot wallet on each chain, and put in its pool.
const USDC_MINTED: u128 = 1_000_000;
/// ETH of the hot wallet (anvil funds it with 10,000) put in each chain's pool.
const ETH_POOL: &str = "1000";

alloy::sol! {
    function mint(address to, uint256 value);
    function approve(address spender, uint256 value) returns (bool);
}

#[derive(clap::Args, Debug)]
pub struct DevnetArgs {
    /// Where the journal, the chains' state and the written configuration go.
    #[arg(long, default_value = "./data-devnet")]
    data: PathBuf,
    /// The L1 node's port (0: a free one).
    #[arg(long, default_value_t = 8545)]
    l1_port: u16,
    /// The L2 node's port (0: a free one).
    #[arg(long, default_value_t = 8546)]
    l2_port: u16,
    /// Where the API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Start and prepare the chains and write the configuration, but serve nothing: for
    /// running railyard nodes of your own on them (several on PostgreSQL, say). Ctrl-C stops
    /// the chains.
    #[arg(long)]
    chains_only: bool,
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        // The state file is written every second; a kill loses at most that.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn anvil_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RAILYARD_ANVIL") {
        return Ok(PathBuf::from(path));
    }
    let pinned = Path::new("tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil");
    if pinned.exists() {
        return Ok(pinned.to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("anvil"))
        .find(|p| p.exists());
    on_path.context(
        "anvil not found: run scripts/install-tools in the repository (it installs the pinned anvil from npm), or set RAILYARD_ANVIL to an anvil binary",
    )
}

fn free_port(port: u16) -> anyhow::Result<u16> {
    if port != 0 {
        return Ok(port);
    }
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_node(anvil: &Path, data: &Path, name: &str, chain_id: u64, port: u16) -> anyhow::Result<Node> {
    let port = free_port(port)?;
    let state = data.join(format!("anvil-{name}.json"));
    let log = std::fs::File::create(data.join(format!("anvil-{name}.log")))?;
    let child = Command::new(anvil)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", &chain_id.to_string()])
        .args(["--block-time", "1", "--state-interval", "1", "--state"])
        .arg(&state)
        .stdout(Stdio::from(log))
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", anvil.display()))?;
    let node = Node { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider(&node.url)?.get_chain_id().await.is_err() {
        if Instant::now() > deadline {
            bail!(
                "anvil ({name}) did not answer on port {port} within 30 s: see {}",
                data.join(format!("anvil-{name}.log")).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(node)
}

fn provider(url: &str) -> anyhow::Result<RootProvider> {
    Ok(RootProvider::new_http(url.parse()?))
}

/// Sends a transaction from `key` and waits for its receipt.
async fn send(
    url: &str,
    key: &str,
    to: Option<Address>,
    input: Vec<u8>,
) -> anyhow::Result<alloy::rpc::types::TransactionReceipt> {
    let provider = provider(url)?;
    let signer: PrivateKeySigner = key.parse()?;
    let mut tx = TxEip1559 {
        chain_id: provider.get_chain_id().await?,
        nonce: provider.get_transaction_count(signer.address()).pending().await?,
        gas_limit: 5_000_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(input),
    };
    let signature = signer.sign_transaction_sync(&mut tx)?;
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    let hash = *envelope.tx_hash();
    let _pending = provider.send_raw_transaction(&envelope.encoded_2718()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(hash).await? {
            if !receipt.status() {
                bail!("setup transaction {hash} reverted");
            }
            return Ok(receipt);
        }
        if Instant::now() > deadline {
            bail!("setup transaction {hash} was not mined within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deploys the token and the batch contract (in that order, from the deployer's first two
/// nonces) unless a previous run did, then mints to the hot wallet and approves.
async fn prepare(url: &str) -> anyhow::Result<(Address, Address)> {
    let provider = provider(url)?;
    let deployer = DEPLOYER_KEY.parse::<PrivateKeySigner>()?.address();
    let token = deployer.create(0);
    let batch = deployer.create(1);
    if provider.get_code_at(batch).await?.is_empty() {
        if provider.get_transaction_count(deployer).await? != 0 {
            bail!(
                "the deployer account on {url} has sent transactions already but the contracts are not there: remove the data directory to start the chains afresh"
            );
        }
        let bytecode = |hex_text: &str| hex::decode(hex_text.trim()).context("committed bytecode is hex");
        send(url, DEPLOYER_KEY, None, bytecode(TOKEN_BYTECODE)?).await?;
        send(url, DEPLOYER_KEY, None, bytecode(BATCH_BYTECODE)?).await?;
        let hot = HOT_KEY.parse::<PrivateKeySigner>()?.address();
        let minted = U256::from(USDC_MINTED) * U256::from(1_000_000u64);
        send(url, DEPLOYER_KEY, Some(token), mintCall { to: hot, value: minted }.abi_encode()).await?;
        send(url, HOT_KEY, Some(token), approveCall { spender: batch, value: U256::MAX }.abi_encode()).await?;
    }
    Ok((token, batch))
}

/// The devnet configuration with this run's URLs, addresses, data directory and pool funding.
fn configuration(data: &Path, nodes: &[(&Node, Address, Address)], listen: &str) -> anyhow::Result<String> {
    let mut config: toml::Table = toml::from_str(DEVNET_CONFIG)?;
    config.insert("data_dir".into(), toml::Value::String(data.display().to_string()));
    let rails = config.get_mut("rails").and_then(|r| r.as_array_mut()).context("devnet.toml has rails")?;
    for (rail, (node, _, batch)) in rails.iter_mut().zip(nodes) {
        let rail = rail.as_table_mut().context("a rail is a table")?;
        rail.insert("rpc_url".into(), toml::Value::String(node.url.clone()));
        rail.insert("batch_contract".into(), toml::Value::String(batch.to_checksum(None)));
    }
    let coins = config.get_mut("stablecoins").and_then(|s| s.as_array_mut()).context("devnet.toml has stablecoins")?;
    let addresses: toml::Table = [("evm:31337", nodes[0].1), ("evm:31338", nodes[1].1)]
        .into_iter()
        .map(|(k, a)| (k.to_owned(), toml::Value::String(a.to_checksum(None))))
        .collect();
    coins[0]
        .as_table_mut()
        .context("a stablecoin is a table")?
        .insert("addresses".into(), toml::Value::Table(addresses));
    for pool in config.get_mut("pools").and_then(|p| p.as_array_mut()).context("devnet.toml has pools")? {
        let pool = pool.as_table_mut().context("a pool is a table")?;
        let fund = if pool.get("asset").and_then(|a| a.as_str()) == Some("USDC") {
            USDC_MINTED.to_string()
        } else {
            ETH_POOL.to_owned()
        };
        pool.insert("fund".into(), toml::Value::String(fund));
    }
    let api = config.entry("api").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    api.as_table_mut().context("api is a table")?.insert("listen".into(), toml::Value::String(listen.to_owned()));
    let text = format!(
        "# Written by `railyard devnet` for the chains it started: edit config/devnet.toml instead.\n{}",
        toml::to_string(&config)?
    );
    Ok(text)
}

pub async fn run(args: &DevnetArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data).with_context(|| format!("cannot create {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)?;
    let anvil = anvil_binary()?;
    let l1 = start_node(&anvil, &data, "l1", 31_337, args.l1_port).await?;
    let l2 = start_node(&anvil, &data, "l2", 31_338, args.l2_port).await?;
    let (token1, batch1) = prepare(&l1.url).await.context("preparing the L1")?;
    let (token2, batch2) = prepare(&l2.url).await.context("preparing the L2")?;
    let path = data.join("railyard.toml");
    std::fs::write(&path, configuration(&data, &[(&l1, token1, batch1), (&l2, token2, batch2)], &args.listen)?)?;
    let hot = HOT_KEY.parse::<PrivateKeySigner>()?.address();
    println!("devnet: L1 (chain 31337) at {}, L2 (chain 31338) at {}", l1.url, l2.url);
    println!("devnet: batch contract {batch1} / {batch2}, USDC {token1} / {token2}");
    println!("devnet: hot wallet {hot} was minted {USDC_MINTED} USDC on each chain; pools funded from it");
    if args.chains_only {
        println!(
            "devnet: configuration in {}; chains ready (set RAILYARD_DEVNET_KEY={HOT_KEY} for the nodes you start; Ctrl-C stops the chains)",
            path.display()
        );
        let _ = tokio::signal::ctrl_c().await;
        drop((l1, l2));
        return Ok(());
    }
    println!("devnet: configuration in {}; starting railyard serve", path.display());
    let serve = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .env("RAILYARD_DEVNET_KEY", HOT_KEY)
        .spawn()
        .context("cannot start railyard serve")?;
    let pid = serve.id().to_string();
    let mut serve = serve;
    let waiter = tokio::task::spawn_blocking(move || serve.wait());
    tokio::pin!(waiter);
    let status = tokio::select! {
        status = &mut waiter => status??,
        _ = tokio::signal::ctrl_c() => {
            // A Ctrl-C in a terminal reaches serve too; a signal to this process alone is
            // passed on, so serve stops as it does on Ctrl-C.
            let passed = Command::new("kill").args(["-INT", &pid]).status();
            if !passed.is_ok_and(|s| s.success()) {
                tracing::debug!("serve had already stopped");
            }
            waiter.await??
        }
    };
    drop((l1, l2));
    if !status.success() {
        bail!("railyard serve exited with {status}");
    }
    Ok(())
}
