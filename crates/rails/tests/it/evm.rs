//! The EVM rail against real anvil nodes: ERC-20 and native batches in one transaction each,
//! stuck → bumped, dropped, reorged out, reverted, replaced, cancelled.

use std::time::{Duration, Instant};

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address as EvmAddress, Bytes, TxKind, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use model::{Address, Amount, Asset, Name, PaymentId, SignedTx};
use rails::evm::{BATCH_TRANSFER_BYTECODE, EvmConfig, EvmRail, SecretKey, Token};
use rails::{Batch, FeeDetail, FeeQuote, Observation, Payout, Rail, RailError, Watch};

use crate::anvil::Anvil;

/// anvil's well-known first two accounts: the hot wallet railyard pays from, and a deployer.
const HOT_KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const DEPLOYER_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
const STABLECOIN_BYTECODE: &str = include_str!("../../../../contracts/out/TestStablecoin.bin");
const GWEI: u128 = 1_000_000_000;

alloy::sol! {
    function mint(address to, uint256 value);
    function approve(address spender, uint256 value) returns (bool);
    function transfer(address to, uint256 value) returns (bool);
}

fn signer(key: &str) -> PrivateKeySigner {
    key.parse().unwrap()
}

/// Signs and sends a transaction outside the rail (setup, and competing transactions), and
/// waits for its receipt when `wait` is set.
async fn send(
    anvil: &Anvil,
    key: &str,
    to: Option<EvmAddress>,
    input: Vec<u8>,
    nonce: Option<u64>,
    wait: bool,
) -> Option<TransactionReceipt> {
    let provider = anvil.provider();
    let signer = signer(key);
    let chain_id = provider.get_chain_id().await.unwrap();
    let nonce = match nonce {
        Some(n) => n,
        None => provider.get_transaction_count(signer.address()).pending().await.unwrap(),
    };
    let mut tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 5_000_000,
        max_fee_per_gas: 50 * GWEI,
        max_priority_fee_per_gas: 2 * GWEI,
        to: to.map_or(TxKind::Create, TxKind::Call),
        value: U256::ZERO,
        access_list: Default::default(),
        input: Bytes::from(input),
    };
    let signature = signer.sign_transaction_sync(&mut tx).unwrap();
    let envelope = TxEnvelope::from(tx.into_signed(signature));
    let hash = *envelope.tx_hash();
    let _pending = provider.send_raw_transaction(&envelope.encoded_2718()).await.unwrap();
    if !wait {
        return None;
    }
    Some(receipt(anvil, hash.0).await)
}

async fn receipt(anvil: &Anvil, txid: [u8; 32]) -> TransactionReceipt {
    let provider = anvil.provider();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(receipt) = provider.get_transaction_receipt(txid.into()).await.unwrap() {
            return receipt;
        }
        assert!(Instant::now() < deadline, "no receipt for 0x{}", hex(&txid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytecode(text: &str) -> Vec<u8> {
    let text = text.trim();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// A chain ready for payouts: contracts deployed, the hot wallet funded with the stablecoin
/// and the batch contract approved, and a rail connected.
struct Chain {
    anvil: Anvil,
    rail: EvmRail,
    token: [u8; 20],
    batch: [u8; 20],
    chain_id: u64,
}

async fn chain(chain_id: u64) -> Chain {
    let anvil = Anvil::start(chain_id).await;
    let deploy = |code: &str| bytecode(code);
    let batch = send(&anvil, DEPLOYER_KEY, None, deploy(BATCH_TRANSFER_BYTECODE), None, true).await.unwrap();
    let token = send(&anvil, DEPLOYER_KEY, None, deploy(STABLECOIN_BYTECODE), None, true).await.unwrap();
    let (batch, token) = (batch.contract_address.unwrap(), token.contract_address.unwrap());
    let hot = signer(HOT_KEY).address();
    let mint = mintCall { to: hot, value: U256::from(1_000_000_000_000u64) }.abi_encode();
    send(&anvil, DEPLOYER_KEY, Some(token), mint, None, true).await.unwrap();
    let approve = approveCall { spender: batch, value: U256::MAX }.abi_encode();
    send(&anvil, HOT_KEY, Some(token), approve, None, true).await.unwrap();
    let rail = EvmRail::connect(
        config(&anvil, chain_id, batch.into_array(), token.into_array()),
        &SecretKey::from_hex(HOT_KEY).unwrap(),
    )
    .await
    .unwrap();
    Chain { anvil, rail, token: token.into_array(), batch: batch.into_array(), chain_id }
}

fn config(anvil: &Anvil, chain_id: u64, batch_contract: [u8; 20], token: [u8; 20]) -> EvmConfig {
    EvmConfig {
        rail: Name::new(&format!("evm-{chain_id}")).unwrap(),
        chain_id,
        rpc_url: anvil.url.clone(),
        batch_contract,
        tokens: vec![Token { asset: Asset::USDC, address: token }],
        confirmations_final: 2,
        batch_size_max: 500,
        amount_min: Amount::new(1),
        amount_max: Amount::new(10u128.pow(30)),
        finality_expected_ms: 2_000,
        fee_cap_wei: 10u128.pow(18),
        max_fee_per_gas_cap: 500 * GWEI,
        priority_fee_per_gas: GWEI,
        gas_margin_percent: 20,
        request_timeout: Duration::from_secs(10),
        nonce_search_blocks: 128,
    }
}

fn recipient(i: u64) -> [u8; 20] {
    let hash = blake3::hash(&i.to_le_bytes());
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&hash.as_bytes()[..20]);
    bytes
}

fn batch(asset: Asset, count: u64, seed: u64, amount: impl Fn(u64) -> u128) -> Batch {
    let payouts = (0..count)
        .map(|i| Payout {
            payment: PaymentId(u128::from(seed * 10_000 + i)),
            destination: Address::Evm(recipient(seed * 10_000 + i)),
            amount: Amount::new(amount(i)),
        })
        .collect();
    Batch { asset, payouts, within_ms: None }
}

fn watch(versions: &[&SignedTx]) -> Watch {
    Watch { versions: versions.iter().map(|v| (*v).clone()).collect(), seen_in_block: None, children: Vec::new() }
}

/// Builds, broadcasts and waits (automine) until the settlement is observed confirmed.
async fn settle(chain: &Chain, batch: &Batch) -> (SignedTx, Observation) {
    let quote = chain.rail.quote(batch).await.unwrap();
    let tx = chain.rail.build(batch, &quote).await.unwrap();
    chain.rail.broadcast(&tx).await.unwrap();
    receipt(&chain.anvil, tx.txid).await;
    let observed = chain.rail.observe(&watch(&[&tx])).await.unwrap();
    (tx, observed)
}

/// A low quote: max fee per gas barely above the current base fee, tip of 1 wei. With
/// automine off nothing is mined until the test says so, so the settlement is stuck. (anvil
/// refuses a fee below the base fee outright, and evicts pending transactions that a raised
/// base fee makes unmineable, so a real "fee spike" cannot be staged on it.)
async fn low_quote(chain: &Chain, gas_limit: u64) -> FeeQuote {
    let provider = chain.anvil.provider();
    let latest = provider.get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest).await.unwrap().unwrap();
    let max_fee_per_gas = u128::from(latest.header.base_fee_per_gas.unwrap()) + 2;
    FeeQuote {
        fee_max: Amount::new(u128::from(gas_limit) * max_fee_per_gas),
        detail: FeeDetail::Evm { gas_limit, max_fee_per_gas, max_priority_fee_per_gas: 1 },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_settle_an_erc20_batch_of_200_and_a_native_batch_in_one_transaction_each() {
    let started = Instant::now();
    let (l1, l2) = tokio::join!(chain(31_337), chain(31_338));
    assert_eq!(l1.rail.capabilities().network.to_string(), "evm:31337");
    assert_eq!(l2.rail.capabilities().network.to_string(), "evm:31338");

    // 200 stablecoin payouts on "L1", one transaction.
    let tokens = batch(Asset::USDC, 200, 1, |i| 1_000_000 + u128::from(i));
    let (tx, observed) = settle(&l1, &tokens).await;
    assert!(matches!(observed, Observation::Confirmed { txid, depth: 1, .. } if txid == tx.txid), "{observed:?}");
    for payout in &tokens.payouts {
        let Address::Evm(owner) = payout.destination else { unreachable!() };
        assert_eq!(l1.rail.token_balance(l1.token, owner).await.unwrap(), U256::from(payout.amount.units()));
    }
    let batch_receipt = receipt(&l1.anvil, tx.txid).await;
    let batch_gas = batch_receipt.gas_used;
    // The fee observed is what the receipt charged (gas used × effective price), below the
    // maximum the transaction offered (its gas limit carries a margin over the estimate).
    let Observation::Confirmed { fee_paid, .. } = observed else { unreachable!() };
    assert_eq!(fee_paid.units(), u128::from(batch_gas) * batch_receipt.effective_gas_price);
    assert!(fee_paid < tx.fee, "charged {fee_paid}, offered up to {}", tx.fee);
    // The baseline: one plain ERC-20 transfer to a fresh recipient.
    let single =
        transferCall { to: EvmAddress::from(recipient(999_999)), value: U256::from(1_000_000u64) }.abi_encode();
    let single_gas =
        send(&l1.anvil, HOT_KEY, Some(EvmAddress::from(l1.token)), single, None, true).await.unwrap().gas_used;
    eprintln!(
        "gas: ERC-20 batch of 200 used {batch_gas} ({} per payout); a single ERC-20 transfer used {single_gas}",
        batch_gas / 200
    );
    assert!(batch_gas / 200 < single_gas, "batching must be cheaper per payout");

    // Native ETH on "L2", one transaction.
    let native = batch(Asset::ETH, 50, 2, |i| 10u128.pow(15) + u128::from(i));
    let (tx, observed) = settle(&l2, &native).await;
    assert!(matches!(observed, Observation::Confirmed { txid, .. } if txid == tx.txid), "{observed:?}");
    for payout in &native.payouts {
        let Address::Evm(owner) = payout.destination else { unreachable!() };
        assert_eq!(l2.rail.native_balance(owner).await.unwrap(), U256::from(payout.amount.units()));
    }
    let native_gas = receipt(&l2.anvil, tx.txid).await.gas_used;
    eprintln!(
        "gas: ETH batch of 50 used {native_gas} ({} per payout); a plain ETH transfer uses 21000",
        native_gas / 50
    );

    // A rail configured for the wrong chain refuses to start.
    let wrong = config(&l2.anvil, 31_337, [1; 20], l2.token);
    let error = EvmRail::connect(wrong, &SecretKey::from_hex(HOT_KEY).unwrap()).await.unwrap_err();
    assert!(error.to_string().contains("expects chain id 31337 but the node is on 31338"), "{error}");
    eprintln!("two-chain settlement test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_settlement_is_bumped_and_exactly_one_version_confirms() {
    let chain = chain(31_340).await;
    chain.anvil.automine(false).await;
    let payouts = batch(Asset::USDC, 5, 3, |_| 7_000_000);
    let quote = chain.rail.quote(&payouts).await.unwrap();
    let FeeDetail::Evm { gas_limit, .. } = quote.detail else { unreachable!() };
    let stuck = chain.rail.build(&payouts, &low_quote(&chain, gas_limit).await).await.unwrap();
    chain.rail.broadcast(&stuck).await.unwrap();
    chain.rail.broadcast(&stuck).await.unwrap(); // the same bytes again: harmless
    assert_eq!(chain.rail.observe(&watch(&[&stuck])).await.unwrap(), Observation::Pending);

    let bumped = chain.rail.bump(&payouts, &stuck, &quote).await.unwrap();
    assert_eq!(bumped.spend, stuck.spend, "a bump spends the same nonce");
    assert_ne!(bumped.txid, stuck.txid);
    chain.rail.broadcast(&bumped).await.unwrap();
    chain.anvil.mine().await;
    chain.anvil.mine().await;
    let observed = chain.rail.observe(&watch(&[&stuck, &bumped])).await.unwrap();
    assert!(matches!(observed, Observation::Confirmed { txid, depth: 2, .. } if txid == bumped.txid), "{observed:?}");
    assert!(
        chain.anvil.provider().get_transaction_receipt(stuck.txid.into()).await.unwrap().is_none(),
        "the stuck version never mined"
    );
    for payout in &payouts.payouts {
        let Address::Evm(owner) = payout.destination else { unreachable!() };
        assert_eq!(
            chain.rail.token_balance(chain.token, owner).await.unwrap(),
            U256::from(7_000_000u64),
            "paid exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_settlement_is_observed_and_its_same_bytes_go_again() {
    let chain = chain(31_341).await;
    chain.anvil.automine(false).await;
    let payouts = batch(Asset::ETH, 3, 4, |_| 10u128.pow(16));
    let quote = chain.rail.quote(&payouts).await.unwrap();
    let tx = chain.rail.build(&payouts, &quote).await.unwrap();
    chain.rail.broadcast(&tx).await.unwrap();
    assert_eq!(chain.rail.observe(&watch(&[&tx])).await.unwrap(), Observation::Pending);
    chain.anvil.rpc("anvil_dropTransaction", serde_json::json!([format!("0x{}", hex(&tx.txid))])).await;
    assert_eq!(chain.rail.observe(&watch(&[&tx])).await.unwrap(), Observation::Dropped);
    chain.rail.broadcast(&tx).await.unwrap();
    chain.anvil.mine().await;
    assert!(matches!(chain.rail.observe(&watch(&[&tx])).await.unwrap(), Observation::Confirmed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_is_observed_as_reorged_out() {
    let chain = chain(31_342).await;
    let payouts = batch(Asset::ETH, 2, 5, |_| 10u128.pow(16));
    let (tx, observed) = settle(&chain, &payouts).await;
    let Observation::Confirmed { block, .. } = observed else { panic!("{observed:?}") };
    chain.anvil.rpc("anvil_reorg", serde_json::json!([1, []])).await;
    let after = chain
        .rail
        .observe(&Watch { versions: vec![tx.clone()], seen_in_block: Some(block), children: Vec::new() })
        .await
        .unwrap();
    assert_eq!(after, Observation::ReorgedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reverted_transfer_is_observed_as_reverted() {
    let chain = chain(31_343).await;
    // More stablecoin than the hot wallet holds: the batch contract's transferFrom reverts.
    let payouts = batch(Asset::USDC, 2, 6, |_| 10u128.pow(15));
    let quote = FeeQuote {
        fee_max: Amount::new(300_000 * 50 * GWEI),
        detail: FeeDetail::Evm { gas_limit: 300_000, max_fee_per_gas: 50 * GWEI, max_priority_fee_per_gas: GWEI },
    };
    assert!(
        matches!(chain.rail.quote(&payouts).await, Err(RailError::Unavailable(_))),
        "estimation refuses it up front"
    );
    let tx = chain.rail.build(&payouts, &quote).await.unwrap();
    chain.rail.broadcast(&tx).await.unwrap();
    receipt(&chain.anvil, tx.txid).await;
    let observed = chain.rail.observe(&watch(&[&tx])).await.unwrap();
    assert!(matches!(observed, Observation::Reverted { txid, depth: 1, .. } if txid == tx.txid), "{observed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_spends_the_nonce_and_pays_nobody_and_a_foreign_spend_is_replaced() {
    let chain = chain(31_344).await;
    chain.anvil.automine(false).await;
    let payouts = batch(Asset::USDC, 3, 7, |_| 5_000_000);
    let quote = chain.rail.quote(&payouts).await.unwrap();
    let FeeDetail::Evm { gas_limit, .. } = quote.detail else { unreachable!() };
    let stuck = chain.rail.build(&payouts, &low_quote(&chain, gas_limit).await).await.unwrap();
    chain.rail.broadcast(&stuck).await.unwrap();
    assert_eq!(chain.rail.observe(&watch(&[&stuck])).await.unwrap(), Observation::Pending);
    let cancel = chain.rail.cancel(&stuck, &quote).await.unwrap();
    assert_eq!(cancel.spend, stuck.spend);
    chain.rail.broadcast(&cancel).await.unwrap();
    chain.anvil.mine().await;
    let observed = chain.rail.observe(&watch(&[&stuck, &cancel])).await.unwrap();
    assert!(matches!(observed, Observation::Confirmed { txid, .. } if txid == cancel.txid), "{observed:?}");
    for payout in &payouts.payouts {
        let Address::Evm(owner) = payout.destination else { unreachable!() };
        assert_eq!(chain.rail.token_balance(chain.token, owner).await.unwrap(), U256::ZERO);
    }

    // A transaction railyard did not sign spends the next nonce: the settlement is Replaced,
    // which (once final) is the proof that it is dead.
    let orphan = chain.rail.build(&payouts, &quote).await.unwrap();
    let model::Spend::Nonce { nonce, .. } = orphan.spend else { unreachable!() };
    send(&chain.anvil, HOT_KEY, Some(signer(HOT_KEY).address()), Vec::new(), Some(nonce), false).await;
    chain.anvil.mine().await;
    chain.anvil.mine().await;
    let observed = chain.rail.observe(&watch(&[&orphan])).await.unwrap();
    let Observation::Replaced { by, depth: 2 } = observed else { panic!("{observed:?}") };
    let foreign =
        chain.anvil.provider().get_transaction_receipt(by.into()).await.unwrap().expect("the foreign spend is mined");
    assert_eq!(foreign.from, signer(HOT_KEY).address());

    // Issue 10, scenario 12: the spender is searched for only in recent blocks (an ordinary
    // node keeps no older state). Past the window the rail says it cannot tell, rather than
    // asking the node for state it does not have.
    for _ in 0..5 {
        chain.anvil.mine().await;
    }
    let narrow = EvmConfig { nonce_search_blocks: 3, ..config(&chain.anvil, chain.chain_id, chain.batch, chain.token) };
    let narrow = EvmRail::connect(narrow, &SecretKey::from_hex(HOT_KEY).unwrap()).await.unwrap();
    let observed = narrow.observe(&watch(&[&orphan])).await.unwrap();
    let Observation::SpenderUnknown { reason } = observed else { panic!("{observed:?}") };
    assert!(reason.contains("further back than the 3 blocks searched"), "{reason}");
    let observed = chain.rail.observe(&watch(&[&orphan])).await.unwrap();
    assert!(matches!(observed, Observation::Replaced { by: b, depth: 7 } if b == by), "{observed:?}");
}

#[test]
fn secret_keys_do_not_print() {
    let key = SecretKey::from_hex(HOT_KEY).unwrap();
    assert_eq!(format!("{key:?}"), "SecretKey(***)");
    assert!(SecretKey::from_hex("0x1234").is_err());
    assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
    assert!(SecretKey::from_env("RAILYARD_TEST_NO_SUCH_VARIABLE").is_err());
}

#[test]
fn keystore_files_decrypt_to_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let hot = signer(HOT_KEY);
    let (_, name) = PrivateKeySigner::encrypt_keystore(
        dir.path(),
        &mut rand08::thread_rng(),
        hot.to_bytes(),
        "correct horse",
        None,
    )
    .unwrap();
    let key = SecretKey::from_keystore(&dir.path().join(name.clone()), "correct horse").unwrap();
    assert_eq!(key.address().unwrap(), hot.address().into_array());
    let error = SecretKey::from_keystore(&dir.path().join(name), "wrong").unwrap_err();
    assert!(error.to_string().contains("cannot decrypt keystore"), "{error}");
}

#[test]
fn the_stablecoin_registry_is_read_per_network_and_validated() {
    use rails::evm::{Stablecoin, tokens_for};
    #[derive(serde::Deserialize)]
    struct File {
        stablecoins: Vec<Stablecoin>,
    }
    let text = r#"
        [[stablecoins]]
        symbol = "USDC"
        decimals = 6
        addresses = { ethereum = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", base = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913" }

        [[stablecoins]]
        symbol = "USDT"
        decimals = 6
        addresses = { ethereum = "0xdAC17F958D2ee523a2206206994597C13D831ec7" }
    "#;
    let registry = toml::from_str::<File>(text).unwrap().stablecoins;
    let base = tokens_for(&registry, model::Network::BASE).unwrap();
    assert_eq!(base.len(), 1);
    assert_eq!((base[0].asset, base[0].address[0]), (Asset::USDC, 0x83));
    assert_eq!(tokens_for(&registry, model::Network::ETHEREUM).unwrap().len(), 2);
    assert!(tokens_for(&registry, model::Network::ARBITRUM).unwrap().is_empty());

    let bad = |edit: &dyn Fn(&mut Vec<Stablecoin>), reason: &str| {
        let mut registry = registry.clone();
        edit(&mut registry);
        let error = tokens_for(&registry, model::Network::ETHEREUM).unwrap_err().to_string();
        assert!(error.contains(reason), "{error}");
    };
    bad(&|r| r[0].symbol = "usdc".into(), "stablecoins[0]: asset symbol");
    bad(&|r| r[1].symbol = "USDC".into(), "stablecoins[1].symbol: USDC is listed twice");
    bad(
        &|r| _ = r[1].addresses.insert("ethereum".into(), "0xdac17f958d2ee523a2206206994597c13d831eC7".into()),
        "stablecoins[1].addresses.ethereum: EVM address",
    );
    bad(
        &|r| _ = r[0].addresses.insert("etherium".into(), "0x00".into()),
        "stablecoins[0].addresses.etherium: unknown network",
    );
    assert!(
        toml::from_str::<File>("[[stablecoins]]\nsymbol = \"X\"\ndecimals = 6\naddresses = {}\ncolor = 1").is_err(),
        "unknown keys are refused"
    );
}

/// A node that is down when the rail is made leaves the rail unavailable, not unbuildable; a
/// node on another chain is a configuration error; a node that answers is used as by connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rail_made_while_its_node_is_down_is_unavailable_until_it_answers() {
    let chain = chain(31_337).await;
    let key = SecretKey::from_hex(HOT_KEY).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut down = config(&chain.anvil, 31_337, [1; 20], chain.token);
    down.rpc_url = format!("http://127.0.0.1:{port}");
    down.request_timeout = Duration::from_millis(500);
    let rail = EvmRail::new(down, &key).unwrap();
    assert_eq!(rail.health().await, rails::Health::Down);
    let payout = Batch {
        asset: Asset::ETH,
        payouts: vec![Payout {
            payment: PaymentId(1),
            destination: model::Address::Evm(recipient(1)),
            amount: Amount::new(1_000),
        }],
        within_ms: None,
    };
    assert!(matches!(rail.quote(&payout).await, Err(RailError::Unavailable(_))));

    let wrong = EvmRail::new(config(&chain.anvil, 99, [1; 20], chain.token), &key).unwrap();
    assert!(matches!(wrong.ensure_connected().await, Err(RailError::Config(_))));

    let lazy = EvmRail::new(config(&chain.anvil, 31_337, [1; 20], chain.token), &key).unwrap();
    assert!(matches!(lazy.health().await, rails::Health::Up { .. }), "it connects on first use");
}
