//! The sandbox chain: settlement to finality, every injectable fault, and determinism.

use model::{Address, Amount, Asset, BitcoinNetwork, Name, Network, PaymentId, SignedTx, Timestamp};
use rails::sandbox::{Fault, SandboxConfig, SandboxRail};
use rails::{Batch, Capabilities, FeeDetail, FeeQuote, Health, Observation, Payout, Rail, RailError, Watch};

const BLOCK_MS: u64 = 1_000;

fn rail(seed: u64) -> SandboxRail {
    let capabilities = Capabilities {
        rail: Name::new("sandbox-btc").unwrap(),
        network: Network::Bitcoin(BitcoinNetwork::Regtest),
        fee_asset: Asset::BTC,
        assets: vec![Asset::BTC],
        amount_min: Amount::new(546),
        amount_max: Amount::new(100_000_000),
        batch_size_max: 10,
        confirmations_final: 3,
        can_replace: true,
        finality_expected_ms: 3 * BLOCK_MS,
    };
    let config = SandboxConfig {
        capabilities,
        seed,
        block_time_ms: BLOCK_MS,
        fee: Amount::new(1_000),
        fee_per_payout: Amount::ZERO,
        fee_cap: Amount::new(5_000),
    };
    SandboxRail::new(config, Timestamp(0))
}

const DESTINATIONS: [&str; 2] =
    ["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "bcrt1qzyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3lgth6c"];

fn batch(amounts: &[u128]) -> Batch {
    let network = Network::Bitcoin(BitcoinNetwork::Regtest);
    let payouts = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| Payout {
            payment: PaymentId(i as u128),
            destination: Address::parse(DESTINATIONS[i % 2], network).unwrap(),
            amount: Amount::new(*a),
        })
        .collect();
    Batch { asset: Asset::BTC, payouts, within_ms: None }
}

fn watch(versions: &[&SignedTx], seen_in_block: Option<[u8; 32]>) -> Watch {
    Watch { versions: versions.iter().map(|v| (*v).clone()).collect(), seen_in_block, children: Vec::new() }
}

async fn signed(rail: &SandboxRail, batch: &Batch) -> SignedTx {
    let quote = rail.quote(batch).await.unwrap();
    rail.build(batch, &quote).await.unwrap()
}

fn balance(rail: &SandboxRail, i: usize) -> u128 {
    rail.balance_of(DESTINATIONS[i], Asset::BTC).units()
}

#[tokio::test]
async fn settles_to_finality_and_rebroadcast_is_harmless() {
    let rail = rail(1);
    let payouts = batch(&[10_000, 20_000]);
    let tx = signed(&rail, &payouts).await;
    rail.broadcast(&tx).await.unwrap();
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Pending);
    rail.advance_to(Timestamp(BLOCK_MS));
    rail.broadcast(&tx).await.unwrap();
    rail.advance_to(Timestamp(3 * BLOCK_MS));
    let observed = rail.observe(&watch(&[&tx], None)).await.unwrap();
    assert!(matches!(observed, Observation::Confirmed { depth: 3, .. }), "{observed:?}");
    assert_eq!((balance(&rail, 0), balance(&rail, 1)), (10_000, 20_000), "paid once");
    assert_eq!(rail.health().await, Health::Up { head: 3 });
}

#[tokio::test]
async fn bad_batches_are_refused() {
    let rail = rail(1);
    let cases = [
        (batch(&[]), "1 to 10 payouts"),
        (batch(&[1; 11]), "1 to 10 payouts"),
        (batch(&[100]), "outside the rail's limits"),
    ];
    for (bad, reason) in cases {
        let error = rail.quote(&bad).await.unwrap_err().to_string();
        assert!(error.contains(reason), "{error}");
    }
    let mut wrong_asset = batch(&[1_000]);
    wrong_asset.asset = Asset::ETH;
    assert!(rail.quote(&wrong_asset).await.unwrap_err().to_string().contains("does not carry ETH"));
    let mut wrong_network = batch(&[1_000]);
    wrong_network.payouts[0].destination =
        Address::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", Network::BASE).unwrap();
    assert!(rail.quote(&wrong_network).await.unwrap_err().to_string().contains("not valid on bitcoin-regtest"));
    let evm_fee = FeeQuote {
        fee_max: Amount::new(1),
        detail: FeeDetail::Evm { gas_limit: 1, max_fee_per_gas: 1, max_priority_fee_per_gas: 1 },
    };
    assert!(rail.build(&batch(&[1_000]), &evm_fee).await.is_err());
}

#[tokio::test]
async fn outage_fee_spike_and_stuck() {
    let rail = rail(2);
    let payouts = batch(&[5_000]);
    let tx = signed(&rail, &payouts).await;
    rail.inject(Fault::Outage);
    assert!(matches!(rail.broadcast(&tx).await, Err(RailError::Unavailable(_))));
    assert!(matches!(rail.observe(&watch(&[&tx], None)).await, Err(RailError::Unavailable(_))));
    assert_eq!(rail.health().await, Health::Down);
    rail.inject(Fault::Restore);
    rail.inject(Fault::FeeSpike { multiplier: 10 });
    assert_eq!(
        rail.quote(&payouts).await,
        Err(RailError::FeeAboveCap { fee: Amount::new(10_000), cap: Amount::new(5_000) })
    );
    // Stuck: broadcast at the normal fee during a spike (3×): blocks come, it stays out.
    rail.inject(Fault::FeeSpike { multiplier: 3 });
    rail.broadcast(&tx).await.unwrap();
    rail.advance_to(Timestamp(5 * BLOCK_MS));
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Pending);
    // Bump: same nonce, higher fee; at most one version can ever confirm.
    let quote = rail.quote(&payouts).await.unwrap();
    let bumped = rail.bump(&payouts, &tx, &quote).await.unwrap();
    assert_eq!(bumped.spend, tx.spend);
    let again = rail.bump(&payouts, &bumped, &quote).await.unwrap();
    assert!(again.fee > bumped.fee && again.spend == tx.spend, "a bump always pays more than the one it replaces");
    rail.broadcast(&bumped).await.unwrap();
    assert!(matches!(rail.broadcast(&tx).await, Err(RailError::Rejected(_))), "the cheaper version cannot come back");
    rail.advance_to(Timestamp(6 * BLOCK_MS));
    let observed = rail.observe(&watch(&[&tx, &bumped], None)).await.unwrap();
    assert!(matches!(observed, Observation::Confirmed { txid, .. } if txid == bumped.txid), "{observed:?}");
    assert_eq!(balance(&rail, 0), 5_000);
    // Blocks with nothing in them while stuck.
    rail.inject(Fault::Stuck);
    let next = signed(&rail, &payouts).await;
    rail.broadcast(&next).await.unwrap();
    rail.advance_to(Timestamp(9 * BLOCK_MS));
    assert_eq!(rail.observe(&watch(&[&next], None)).await.unwrap(), Observation::Pending);
}

#[tokio::test]
async fn dropped_reverted_reorged_cancelled_and_replaced() {
    let rail = rail(3);
    let payouts = batch(&[7_000]);
    // Dropped, then the same bytes again.
    let tx = signed(&rail, &payouts).await;
    rail.inject(Fault::DropNext);
    rail.broadcast(&tx).await.unwrap();
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Dropped);
    rail.broadcast(&tx).await.unwrap();
    rail.advance_to(Timestamp(BLOCK_MS));
    let Observation::Confirmed { block, .. } = rail.observe(&watch(&[&tx], None)).await.unwrap() else { panic!() };
    // Reorg: the block is replaced; the transaction returns to the mempool and mines again.
    rail.inject(Fault::Reorg { depth: 1 });
    assert_eq!(rail.observe(&watch(&[&tx], Some(block))).await.unwrap(), Observation::ReorgedOut);
    assert_eq!(balance(&rail, 0), 0, "a reorged-out block's payouts are gone with it");
    rail.advance_to(Timestamp(2 * BLOCK_MS));
    let again = rail.observe(&watch(&[&tx], Some(block))).await.unwrap();
    assert!(matches!(again, Observation::Confirmed { block: b, depth: 1, .. } if b != block), "{again:?}");
    assert_eq!(balance(&rail, 0), 7_000, "mined again: paid once, not twice");
    // Reverted: mined, nonce spent, nobody paid.
    let reverted = signed(&rail, &batch(&[9_000])).await;
    rail.inject(Fault::RevertNext);
    rail.broadcast(&reverted).await.unwrap();
    rail.advance_to(Timestamp(3 * BLOCK_MS));
    assert!(matches!(rail.observe(&watch(&[&reverted], None)).await.unwrap(), Observation::Reverted { .. }));
    assert_eq!(balance(&rail, 0), 7_000);
    // Cancel: pays nobody.
    let pending = signed(&rail, &batch(&[11_000])).await;
    rail.broadcast(&pending).await.unwrap();
    let quote = FeeQuote { fee_max: Amount::new(2_000), detail: FeeDetail::Sandbox { fee: Amount::new(2_000) } };
    let cancel = rail.cancel(&pending, &quote).await.unwrap();
    rail.broadcast(&cancel).await.unwrap();
    rail.advance_to(Timestamp(4 * BLOCK_MS));
    assert!(
        matches!(rail.observe(&watch(&[&pending, &cancel], None)).await.unwrap(), Observation::Confirmed { txid, .. } if txid == cancel.txid)
    );
    // Watching only the original: its nonce was spent by a version it does not know of.
    assert_eq!(
        rail.observe(&watch(&[&pending], None)).await.unwrap(),
        Observation::Replaced { by: cancel.txid, depth: 1 }
    );
    assert_eq!(balance(&rail, 0), 7_000);
}

#[tokio::test]
async fn the_same_seed_and_calls_give_the_same_chain() {
    async fn run(seed: u64) -> Vec<String> {
        let rail = rail(seed);
        let mut trace = Vec::new();
        for step in 0..6u64 {
            let tx = signed(&rail, &batch(&[1_000 + u128::from(step)])).await;
            if step == 2 {
                rail.inject(Fault::Reorg { depth: 1 });
            }
            rail.broadcast(&tx).await.unwrap();
            rail.advance_to(Timestamp((step + 1) * BLOCK_MS));
            trace.push(format!("{:?} {:?}", tx.txid, rail.observe(&watch(&[&tx], None)).await.unwrap()));
        }
        trace
    }
    assert_eq!(run(7).await, run(7).await);
    assert_ne!(run(7).await, run(8).await, "the seed matters");
}

/// A pruned chain forgets old transaction bodies and keeps no balances, yet observing,
/// re-broadcasting and replacing work as on an archive chain.
#[tokio::test]
async fn a_pruned_chain_stays_small_and_still_observes() {
    let rail = rail(1);
    rail.prune(3);
    let mut txs = Vec::new();
    for i in 0..20u64 {
        let tx = signed(&rail, &batch(&[10_000 + u128::from(i)])).await;
        rail.broadcast(&tx).await.unwrap();
        rail.advance_to(Timestamp((i + 1) * BLOCK_MS));
        txs.push(tx);
    }
    assert!(rail.bodies_kept() <= 4, "{} bodies kept", rail.bodies_kept());
    let observed = rail.observe(&watch(&[&txs[0]], None)).await.unwrap();
    assert!(matches!(observed, Observation::Confirmed { depth: 20, .. }), "{observed:?}");
    // The same bytes again: the nonce is spent, nothing is paid twice.
    rail.broadcast(&txs[0]).await.unwrap();
    rail.advance_to(Timestamp(25 * BLOCK_MS));
    assert!(matches!(rail.observe(&watch(&[&txs[0]], None)).await.unwrap(), Observation::Confirmed { depth: 25, .. }));
    let destination = Address::parse(DESTINATIONS[0], Network::Bitcoin(BitcoinNetwork::Regtest)).unwrap();
    let error = Rail::balance_of(&rail, &destination, Asset::BTC).await.unwrap_err();
    assert!(matches!(error, RailError::Unsupported { .. }), "{error}");
}

/// EVM nonce order: a transaction whose earlier nonce is missing waits behind it, however
/// much it pays; when the missing one arrives both are mined, in order.
#[tokio::test]
async fn a_missing_nonce_blocks_every_later_one() {
    let rail = rail(1);
    let first = signed(&rail, &batch(&[10_000])).await;
    let second = signed(&rail, &batch(&[20_000, 30_000])).await;
    rail.broadcast(&second).await.unwrap();
    rail.advance_to(Timestamp(3 * BLOCK_MS));
    assert_eq!(rail.observe(&watch(&[&second], None)).await.unwrap(), Observation::Pending, "waits for nonce 0");
    rail.broadcast(&first).await.unwrap();
    rail.advance_to(Timestamp(4 * BLOCK_MS));
    for tx in [&first, &second] {
        assert!(matches!(rail.observe(&watch(&[tx], None)).await.unwrap(), Observation::Confirmed { depth: 1, .. }));
    }
}

/// The node can refuse broadcasts for good (the hot wallet cannot pay for gas) until
/// restored; a refused broadcast leaves nothing in the mempool.
#[tokio::test]
async fn refused_broadcasts_leave_nothing_behind() {
    let rail = rail(1);
    let tx = signed(&rail, &batch(&[10_000])).await;
    rail.inject(Fault::RefuseBroadcasts);
    assert!(matches!(rail.broadcast(&tx).await, Err(RailError::Rejected(_))));
    assert_eq!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Dropped);
    rail.inject(Fault::Restore);
    rail.broadcast(&tx).await.unwrap();
    rail.advance_to(Timestamp(BLOCK_MS));
    assert!(matches!(rail.observe(&watch(&[&tx], None)).await.unwrap(), Observation::Confirmed { .. }));
}

/// A replacement pays at least an eighth more than the version it replaces, as an EVM node
/// requires; past the cap it is `FeeAboveCap`.
#[tokio::test]
async fn a_replacement_pays_an_eighth_more_within_the_cap() {
    let rail = rail(1);
    let payouts = batch(&[10_000]);
    let tx = signed(&rail, &payouts).await;
    let quote = rail.quote(&payouts).await.unwrap();
    let bumped = rail.bump(&payouts, &tx, &quote).await.unwrap();
    assert_eq!((tx.fee, bumped.fee), (Amount::new(1_000), Amount::new(1_125)));
    let mut last = bumped;
    let refused = loop {
        match rail.bump(&payouts, &last, &quote).await {
            Ok(next) => last = next,
            Err(error) => break error,
        }
    };
    assert!(matches!(refused, RailError::FeeAboveCap { .. }), "{refused:?}");
    assert!(last.fee <= Amount::new(5_000));
}

/// After a restart the next nonce is past what the chain and the journal know: a nonce built
/// but never broadcast nor journaled is used again (no gap), one the journal signed is not.
#[tokio::test]
async fn recovered_nonces_leave_no_gap() {
    let rail = rail(1);
    let mined = signed(&rail, &batch(&[10_000])).await;
    rail.broadcast(&mined).await.unwrap();
    rail.advance_to(Timestamp(BLOCK_MS));
    let _lost = signed(&rail, &batch(&[20_000])).await; // nonce 1: built, then the process died
    rail.recover_spends(&[]).unwrap();
    let again = signed(&rail, &batch(&[20_000])).await;
    assert_eq!(again.spend, model::Spend::Nonce { sender: [0x5a; 20], nonce: 1 }, "nonce 1 is used again");
    rail.recover_spends(&[model::Spend::Nonce { sender: [0x5a; 20], nonce: 4 }]).unwrap();
    let next = signed(&rail, &batch(&[20_000])).await;
    assert_eq!(next.spend, model::Spend::Nonce { sender: [0x5a; 20], nonce: 5 }, "past the journal's");
}
