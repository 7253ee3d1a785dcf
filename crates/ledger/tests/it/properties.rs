//! Property tests: any sequence of transfers keeps conservation and the balance flags, a
//! refused transfer changes nothing, and replaying the applied transfers gives the same ledger.

use ledger::*;
use model::{Amount, Asset, Name};
use proptest::prelude::*;

const ACCOUNTS: u128 = 6;

/// Accounts 1..=6: 1 and 4 are unconstrained (treasury), the rest non-negative; 1-3 USDC, 4-6 BTC.
fn accounts() -> Ledger {
    let mut ledger = Ledger::new();
    for n in 1..=ACCOUNTS {
        let asset = if n <= 3 { Asset::USDC } else { Asset::BTC };
        let flags = if n == 1 || n == 4 { AccountFlags::UNCONSTRAINED } else { AccountFlags::NON_NEGATIVE };
        let owner = Owner::Pool(Name::new(&format!("rail{n}")).unwrap());
        ledger.create_account(AccountId(n), owner, asset, flags).unwrap();
    }
    ledger
}

fn amount() -> impl Strategy<Value = Amount> {
    prop_oneof![8 => 0u128..2_000, 1 => Just(u128::MAX), 1 => Just(u128::MAX / 2)].prop_map(Amount::new)
}

fn op() -> impl Strategy<Value = Op> {
    let account = (1..=ACCOUNTS + 1).prop_map(AccountId); // ACCOUNTS + 1 does not exist
    let pending_id = (0u128..40).prop_map(TransferId);
    prop_oneof![
        (account.clone(), account.clone(), amount()).prop_map(|(debit, credit, amount)| Op::Single {
            debit,
            credit,
            amount
        }),
        (account.clone(), account, amount()).prop_map(|(debit, credit, amount)| Op::Pending { debit, credit, amount }),
        (pending_id.clone(), amount()).prop_map(|(pending, amount)| Op::Post { pending, amount }),
        pending_id.prop_map(|pending| Op::Void { pending }),
    ]
}

/// Ids from a small range, so that reuse (same and different bodies) happens often.
fn transfer() -> impl Strategy<Value = Transfer> {
    (0u128..40, op()).prop_map(|(id, op)| Transfer { id: TransferId(id), op })
}

#[derive(Clone, Debug)]
enum Step {
    One(Transfer),
    Linked(Vec<Transfer>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![4 => transfer().prop_map(Step::One), 1 => prop::collection::vec(transfer(), 1..5).prop_map(Step::Linked)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512), ..ProptestConfig::default() })]

    #[test]
    fn conservation_flags_and_replay(steps in prop::collection::vec(step(), 1..80)) {
        let mut ledger = accounts();
        let mut log: Vec<Transfer> = Vec::new();
        for step in &steps {
            let before = ledger.clone();
            let batch: Vec<Transfer> = match step {
                Step::One(t) => vec![*t],
                Step::Linked(ts) => ts.clone(),
            };
            let outcome = match step {
                Step::One(t) => ledger.apply(t).map(|a| vec![a]).map_err(|_| ()),
                Step::Linked(ts) => ledger.apply_linked(ts).map_err(|_| ()),
            };
            match outcome {
                Ok(applied) => {
                    for (t, a) in batch.iter().zip(applied) {
                        if a == Applied::Created {
                            log.push(*t);
                        }
                    }
                }
                Err(()) => prop_assert_eq!(&ledger, &before, "a refused step changed the ledger"),
            }
            prop_assert!(ledger.verify().is_ok(), "{:?}", ledger.verify());
            for account in ledger.accounts() {
                prop_assert!(account.flags_hold(), "account {} breaks its flags", account.id);
                if account.flags.debits_must_not_exceed_credits {
                    prop_assert!(account.available().is_some());
                }
            }
        }
        // Replay: the applied transfers, in order, rebuild the same ledger bit for bit.
        let mut replayed = accounts();
        for t in &log {
            prop_assert_eq!(replayed.apply(t), Ok(Applied::Created));
        }
        prop_assert_eq!(replayed.state_hash(), ledger.state_hash());
        prop_assert_eq!(&replayed, &ledger);
        // Idempotency: applying them all again changes nothing.
        for t in &log {
            prop_assert_eq!(replayed.apply(t), Ok(Applied::Exists));
        }
        prop_assert_eq!(replayed.state_hash(), ledger.state_hash());
    }
}
