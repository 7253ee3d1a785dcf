//! Router-only properties, each over random inputs. The engine's loop (routing, batching,
//! reserving, signing, watching and reissuing under faults) is exercised by the simulator in
//! `crates/sim`, which runs the real engine; here each router part is checked alone:
//! - `assess` finalizes only a paying version at final depth, and rolls back only on a final
//!   proof of death (rule 3);
//! - `decide_all` chooses only eligible rails and never commits more of a pool than it holds;
//! - the batcher hands out every payment it was given exactly once, within the size limit;
//! - the pools' ledger balances and no pool goes negative, whatever is reserved, posted or
//!   voided, and a refused reservation changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use model::*;
use proptest::prelude::*;
use router::*;

use crate::{T0, caps, evm, name, payment};

fn txid(n: u8) -> [u8; 32] {
    [n; 32]
}

fn observation() -> impl Strategy<Value = Observation> {
    let depth = 0u64..6;
    let fee = (0u128..50).prop_map(Amount::new);
    prop_oneof![
        Just(Observation::Pending),
        Just(Observation::Dropped),
        Just(Observation::ReorgedOut),
        Just(Observation::SpenderUnknown { reason: "no state".into() }),
        (0u8..4, depth.clone(), fee.clone()).prop_map(|(t, depth, fee_paid)| Observation::Confirmed {
            txid: txid(t),
            block: [9; 32],
            depth,
            fee_paid
        }),
        (0u8..4, depth.clone(), fee).prop_map(|(t, depth, fee_paid)| Observation::Reverted {
            txid: txid(t),
            block: [9; 32],
            depth,
            fee_paid
        }),
        (4u8..6, depth).prop_map(|(t, depth)| Observation::Replaced { by: txid(t), depth }),
    ]
}

fn watch() -> impl Strategy<Value = (SettlementWatch, u64)> {
    (
        observation(),
        1u64..4,
        0u64..200_000,
        0u32..5,
        0u32..8,
        proptest::collection::btree_set(0u8..4, 0..2),
        any::<bool>(),
        0u64..400_000,
    )
        .prop_map(
            |(observation, confirmations_final, since, bumps, rebroadcasts, cancels, fee_above_cap, later)| {
                let cancels: Vec<[u8; 32]> = cancels.into_iter().map(txid).collect();
                let watch = SettlementWatch {
                    observation,
                    confirmations_final,
                    last_action_at: Timestamp(T0.0 + since),
                    bumps,
                    rebroadcasts,
                    cancelling: !cancels.is_empty(),
                    cancels,
                    fee_above_cap,
                };
                (watch, T0.0 + since + later)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// Settled only on a paying version at final depth; dead only on a final proof, and the
    /// proof names what the chain shows.
    #[test]
    fn assess_finalizes_and_rolls_back_only_on_final_evidence((watch, now) in watch()) {
        let policy = AnomalyPolicy { stuck_after_ms: 60_000, bump_budget: 2, rebroadcasts_max: 3, attempts_max: 3 };
        let action = assess(&watch, &policy, Timestamp(now));
        let deep = |depth: u64| depth >= watch.confirmations_final;
        match (&action, &watch.observation) {
            (Action::Finalize { txid }, Observation::Confirmed { txid: seen, depth, .. }) => {
                prop_assert_eq!(txid, seen);
                prop_assert!(deep(*depth));
                prop_assert!(!watch.cancels.contains(txid), "a cancel pays nobody: not settled");
            }
            (Action::Finalize { .. }, other) => prop_assert!(false, "finalized on {:?}", other),
            (Action::RollBack { proof }, observed) => match (proof, observed) {
                (DeathProof::RevertedFinal { txid }, Observation::Reverted { txid: seen, depth, .. }) => {
                    prop_assert_eq!(txid, seen);
                    prop_assert!(deep(*depth));
                }
                (DeathProof::CancelFinal { txid }, Observation::Confirmed { txid: seen, depth, .. })
                | (DeathProof::CancelFinal { txid }, Observation::Reverted { txid: seen, depth, .. }) => {
                    prop_assert_eq!(txid, seen);
                    prop_assert!(deep(*depth));
                    prop_assert!(watch.cancels.contains(txid));
                }
                (DeathProof::ConflictFinal { txid }, Observation::Replaced { by, depth }) => {
                    prop_assert_eq!(txid, by);
                    prop_assert!(deep(*depth));
                }
                (proof, observed) => prop_assert!(false, "rolled back with {:?} on {:?}", proof, observed),
            },
            // A settlement still pending or gone from the mempool is never given up on
            // without a cancel: it is re-sent, bumped, cancelled, held, or waited on.
            _ => {}
        }
    }
}

#[derive(Clone, Debug)]
struct RailSpec {
    chain: u64,
    open: bool,
    fee_cost: u64,
    fee_reserve: u128,
    usdc: u128,
    eth: u128,
}

fn rail_spec() -> impl Strategy<Value = RailSpec> {
    (prop::bool::weighted(0.8), 1u64..100, 0u128..20, 0u128..3_000, 0u128..100).prop_map(
        |(open, fee_cost, fee_reserve, usdc, eth)| RailSpec { chain: 0, open, fee_cost, fee_reserve, usdc, eth },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Every chosen rail is one the payment may use, and what the decisions of one round
    /// commit to a pool (amounts, and a fee per settlement they make) fits in it.
    #[test]
    fn decide_all_chooses_eligible_rails_within_their_pools(
        specs in proptest::collection::vec(rail_spec(), 1..4),
        amounts in proptest::collection::vec((1u128..1_500, 0usize..3, any::<bool>()), 1..30),
    ) {
        let chains = [8453u64, 10, 42161];
        let specs: Vec<RailSpec> = specs.into_iter().enumerate().map(|(i, s)| RailSpec { chain: chains[i], ..s }).collect();
        let capabilities: Vec<Capabilities> =
            specs.iter().enumerate().map(|(i, s)| caps(["base", "optimism", "arbitrum"][i], s.chain, 2_000)).collect();
        let states: Vec<RailState<'_>> = capabilities
            .iter()
            .zip(&specs)
            .map(|(c, s)| RailState {
                capabilities: c,
                breaker: if s.open { BreakerState::Closed } else { BreakerState::Open { until: Timestamp(u64::MAX) } },
                fee_cost: s.fee_cost,
                fee_reserve: Amount::new(s.fee_reserve),
                success_permille: 1000,
            })
            .collect();
        let pool: BTreeMap<(RailId, Asset), Amount> = capabilities
            .iter()
            .zip(&specs)
            .flat_map(|(c, s)| [((c.rail, Asset::USDC), Amount::new(s.usdc)), ((c.rail, Asset::ETH), Amount::new(s.eth))])
            .collect();
        let payments: Vec<Payment> = amounts
            .iter()
            .enumerate()
            .map(|(i, (amount, allowed, eth))| {
                let networks: Vec<Network> = specs.iter().skip(*allowed % specs.len()).map(|s| evm(s.chain)).collect();
                let mut p = payment(i as u128 + 1, 1, *amount, &networks);
                if *eth { p.asset = Asset::ETH; }
                p
            })
            .collect();
        let input: Vec<(&Payment, Timestamp)> = payments.iter().map(|p| (p, Timestamp(T0.0 + 60_000))).collect();
        let router = Router::new(Weights::default(), vec![]).unwrap();
        let available = |rail: RailId, asset: Asset| pool.get(&(rail, asset)).copied().unwrap_or(Amount::ZERO);
        let decisions = router.decide_all(&input, &states, &available, T0);
        prop_assert_eq!(decisions.len(), payments.len());
        let mut used: BTreeMap<(RailId, Asset), u128> = BTreeMap::new();
        let mut per_rail: BTreeMap<(RailId, Asset), usize> = BTreeMap::new();
        for (decision, p) in decisions.iter().zip(&payments) {
            let Some(chosen) = decision.chosen else { continue };
            let state = states.iter().find(|s| s.capabilities.rail == chosen).unwrap();
            let c = state.capabilities;
            prop_assert!(matches!(state.breaker, BreakerState::Closed), "an open breaker's rail chosen");
            prop_assert!(p.networks.contains(&c.network), "a network the payment does not allow");
            prop_assert!(c.assets.contains(&p.asset) && c.amount_min <= p.amount && p.amount <= c.amount_max);
            *used.entry((chosen, p.asset)).or_default() += p.amount.units();
            let count = per_rail.entry((chosen, p.asset)).or_default();
            if (*count).is_multiple_of(c.batch_size_max) {
                *used.entry((chosen, c.fee_asset)).or_default() += state.fee_reserve.units();
            }
            *count += 1;
        }
        for ((rail, asset), total) in used {
            prop_assert!(total <= available(rail, asset).units(), "{} {} over-committed: {} of {}", rail, asset, total, available(rail, asset));
        }
    }

    /// Whatever is added, flushed by time, taken back or removed, every payment comes out
    /// exactly once, in batches of one rail and asset within the size limit, and an
    /// immediate payment never waits past the flush after it.
    #[test]
    fn the_batcher_hands_out_every_payment_once(
        ops in proptest::collection::vec((0u8..10, 0usize..2, 0usize..2, any::<bool>(), 0u64..3_000), 1..200),
    ) {
        let policy = BatchPolicy { windows_ms: BTreeMap::new(), window_default_ms: 2_000, immediate: vec![name("urgent")] };
        let mut batcher = Batcher::new(policy);
        let rails = [name("base"), name("optimism")];
        let assets = [Asset::USDC, Asset::ETH];
        let mut now = T0;
        let mut inside: BTreeSet<PaymentId> = BTreeSet::new();
        let mut out: BTreeSet<PaymentId> = BTreeSet::new();
        let mut next = 1u128;
        for (op, r, a, urgent, wait) in ops {
            now = now.saturating_add_ms(wait);
            match op {
                0..6 => {
                    let id = PaymentId(next);
                    next += 1;
                    let class = if urgent { name("urgent") } else { name("standard") };
                    batcher.add(rails[r], assets[a], 3, id, class, now);
                    inside.insert(id);
                }
                6..8 => {
                    for flush in batcher.flush(now) {
                        prop_assert!(!flush.payments.is_empty() && flush.payments.len() <= 3);
                        for id in flush.payments {
                            prop_assert!(inside.remove(&id), "{} flushed but not waiting", id);
                            prop_assert!(out.insert(id), "{} flushed twice", id);
                        }
                    }
                    prop_assert_eq!(batcher.waiting(), inside.len());
                }
                8 => {
                    for id in batcher.take_rail(rails[r]) {
                        prop_assert!(inside.remove(&id));
                        prop_assert!(out.insert(id));
                    }
                }
                _ => {
                    if let Some(id) = inside.iter().next().copied() {
                        prop_assert!(batcher.remove(id));
                        inside.remove(&id);
                        out.insert(id);
                    }
                }
            }
        }
        // Nothing waits longer than its window.
        for flush in batcher.flush(now.saturating_add_ms(2_000)) {
            for id in flush.payments {
                prop_assert!(inside.remove(&id));
            }
        }
        prop_assert!(inside.is_empty(), "{:?} never flushed", inside);
        prop_assert_eq!(batcher.waiting(), 0);
    }

    /// Random funding, reservations, posts and voids: the ledger always balances, no pool
    /// goes negative, a pool's minimum holds for non-urgent reservations, and a refused
    /// operation changes nothing.
    #[test]
    fn pools_balance_whatever_is_reserved_posted_or_voided(
        ops in proptest::collection::vec((0u8..6, 0u128..600, 0u128..30, any::<bool>()), 1..120),
    ) {
        let rail = name("base");
        let config = PoolConfig {
            rail,
            asset: Asset::USDC,
            min: Amount::new(100),
            target: Amount::new(1_000),
            max: Amount::new(1_000_000),
        };
        let mut pools = Pools::new(&[config], &[(rail, Asset::ETH)]).unwrap();
        let mut open: Vec<SettlementId> = Vec::new();
        let mut next = 1u128;
        for (op, amount, fee, urgent) in ops {
            let before = pools.clone();
            let result = match op {
                0 => {
                    next += 1;
                    pools.fund(rail, if urgent { Asset::ETH } else { Asset::USDC }, Amount::new(amount), ledger::TransferId(next))
                }
                1 | 2 => {
                    next += 1;
                    let request = Reserve {
                        settlement: SettlementId(next),
                        rail,
                        asset: Asset::USDC,
                        amount: Amount::new(amount),
                        fee_asset: Asset::ETH,
                        fee: Amount::new(fee),
                        urgent,
                    };
                    let allowed = pools.can_reserve(&request);
                    if allowed.is_ok() {
                        let left = pools.available(rail, Asset::USDC).checked_sub(Amount::new(amount));
                        prop_assert!(left.is_some_and(|left| urgent || left >= config.min), "the minimum holds");
                        pools.reserve(&request).unwrap();
                        open.push(request.settlement);
                    }
                    allowed
                }
                3 => match open.pop() {
                    Some(id) => pools.post(id, Amount::new(fee)),
                    None => Ok(()),
                },
                4 => match open.pop() {
                    Some(id) => pools.void_burning(id, Amount::new(fee)),
                    None => Ok(()),
                },
                _ => match open.pop() {
                    Some(id) => pools.void(id),
                    None => Ok(()),
                },
            };
            if result.is_err() {
                prop_assert_eq!(&pools, &before, "a refused operation changed the pools");
            }
            prop_assert!(pools.ledger().verify().is_ok(), "{:?}", pools.ledger().verify());
            prop_assert_eq!(pools.open_reservations(), open.len());
        }
    }
}
