//! Ledger behaviour: a table of transfers with their expected outcomes, and property tests
//! over random sequences (conservation, flags, refused transfers change nothing, replay).

mod properties;

use ledger::*;
use model::{Amount, Asset, MerchantId, Name};

const TREASURY: AccountId = AccountId(1);
const POOL: AccountId = AccountId(2);
const IN_FLIGHT: AccountId = AccountId(3);
const PAID: AccountId = AccountId(4);
const BTC_POOL: AccountId = AccountId(5);

fn ledger() -> Ledger {
    let rail = Name::new("base").unwrap();
    let mut ledger = Ledger::new();
    let accounts = [
        (TREASURY, Owner::Treasury, Asset::USDC, AccountFlags::UNCONSTRAINED),
        (POOL, Owner::Pool(rail), Asset::USDC, AccountFlags::NON_NEGATIVE),
        (IN_FLIGHT, Owner::InFlight(rail), Asset::USDC, AccountFlags::NON_NEGATIVE),
        (PAID, Owner::PaidOut, Asset::USDC, AccountFlags::UNCONSTRAINED),
        (BTC_POOL, Owner::Pool(Name::new("bitcoin").unwrap()), Asset::BTC, AccountFlags::NON_NEGATIVE),
    ];
    for (id, owner, asset, flags) in accounts {
        assert_eq!(ledger.create_account(id, owner, asset, flags), Ok(Applied::Created));
    }
    ledger
}

fn single(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Transfer {
    Transfer { id: TransferId(id), op: Op::Single { debit, credit, amount: Amount::new(amount) } }
}

fn pending(id: u128, debit: AccountId, credit: AccountId, amount: u128) -> Transfer {
    Transfer { id: TransferId(id), op: Op::Pending { debit, credit, amount: Amount::new(amount) } }
}

fn post(id: u128, of: u128, amount: u128) -> Transfer {
    Transfer { id: TransferId(id), op: Op::Post { pending: TransferId(of), amount: Amount::new(amount) } }
}

fn void(id: u128, of: u128) -> Transfer {
    Transfer { id: TransferId(id), op: Op::Void { pending: TransferId(of) } }
}

fn available(ledger: &Ledger, id: AccountId) -> u128 {
    ledger.account(id).unwrap().available().unwrap().units()
}

/// Applies each transfer in order, checking its outcome; a refused transfer must change nothing.
fn check(ledger: &mut Ledger, steps: &[(Transfer, Result<Applied, TransferError>)]) {
    for (i, (transfer, expected)) in steps.iter().enumerate() {
        let before = ledger.clone();
        let got = ledger.apply(transfer);
        assert_eq!(&got, expected, "step {i}: {transfer:?}");
        if got.is_err() {
            assert_eq!(*ledger, before, "step {i}: a refused transfer changed the ledger");
        }
        ledger.verify().unwrap();
    }
}

#[test]
fn transfer_table() {
    use Applied::*;
    use TransferError::*;
    let mut ledger = ledger();
    check(
        &mut ledger,
        &[
            (single(10, TREASURY, POOL, 1_000), Ok(Created)),
            (single(10, TREASURY, POOL, 1_000), Ok(Exists)),
            (single(10, TREASURY, POOL, 999), Err(IdReused(TransferId(10)))),
            (single(11, POOL, PAID, 1_001), Err(ExceedsCredits(POOL))),
            (single(11, POOL, POOL, 1), Err(SameAccount(POOL))),
            (single(11, POOL, BTC_POOL, 1), Err(AssetMismatch { debit: POOL, credit: BTC_POOL })),
            (single(11, POOL, AccountId(99), 1), Err(AccountNotFound(AccountId(99)))),
            (single(11, POOL, PAID, 0), Err(ZeroAmount)),
            (single(11, TREASURY, POOL, u128::MAX), Err(Overflow(TREASURY))),
            (single(11, PAID, POOL, u128::MAX), Err(Overflow(POOL))),
            // pending + posted must fit as well, or a later post would overflow
            (pending(11, PAID, POOL, u128::MAX - 999), Err(Overflow(POOL))),
            // reserve 600 of the pool: only 400 remains available
            (pending(20, POOL, IN_FLIGHT, 600), Ok(Created)),
            (pending(21, POOL, IN_FLIGHT, 401), Err(ExceedsCredits(POOL))),
            (pending(21, POOL, IN_FLIGHT, 400), Ok(Created)),
            (post(30, 20, 601), Err(PostExceedsPending(TransferId(20)))),
            (post(30, 20, 0), Err(ZeroAmount)),
            (post(30, 99, 1), Err(PendingNotFound(TransferId(99)))),
            (post(30, 10, 1), Err(NotPending(TransferId(10)))),
            // partial post: 550 of 600 is paid, 50 returns to the pool
            (post(30, 20, 550), Ok(Created)),
            (post(30, 20, 550), Ok(Exists)),
            (post(31, 20, 1), Err(AlreadyPosted(TransferId(20)))),
            (void(31, 20), Err(AlreadyPosted(TransferId(20)))),
            (void(31, 21), Ok(Created)),
            (void(32, 21), Err(AlreadyVoided(TransferId(21)))),
            (post(32, 21, 1), Err(AlreadyVoided(TransferId(21)))),
        ],
    );
    assert_eq!(available(&ledger, POOL), 450);
    assert_eq!(ledger.account(IN_FLIGHT).unwrap().balance.credits_posted, Amount::new(550));
    assert_eq!(
        ledger.pending_status(TransferId(20)),
        Some(PendingStatus::Posted { amount: Amount::new(550), by: TransferId(30) })
    );
}

#[test]
fn linked_transfers_apply_all_or_nothing() {
    let mut ledger = ledger();
    ledger.apply(&single(1, TREASURY, POOL, 100)).unwrap();
    let before = ledger.clone();
    let chain = [pending(2, POOL, IN_FLIGHT, 60), post(3, 2, 60), single(4, POOL, PAID, 41)];
    let error = ledger.apply_linked(&chain).unwrap_err();
    assert_eq!(error, LinkedError { index: 2, error: TransferError::ExceedsCredits(POOL) });
    assert_eq!(ledger, before, "a failed chain must leave no trace");
    assert!(ledger.transfer(TransferId(2)).is_none(), "a failed chain does not consume ids");

    let chain = [pending(2, POOL, IN_FLIGHT, 60), post(3, 2, 60), single(4, POOL, PAID, 40)];
    assert_eq!(ledger.apply_linked(&chain), Ok(vec![Applied::Created; 3]));
    assert_eq!(ledger.apply_linked(&chain), Ok(vec![Applied::Exists; 3]));
    assert_eq!(available(&ledger, POOL), 0);
}

#[test]
fn accounts_are_idempotent_and_unique_per_owner_and_asset() {
    let mut ledger = ledger();
    assert_eq!(
        ledger.create_account(POOL, Owner::Pool(Name::new("base").unwrap()), Asset::USDC, AccountFlags::NON_NEGATIVE),
        Ok(Applied::Exists)
    );
    assert_eq!(
        ledger.create_account(POOL, Owner::Treasury, Asset::USDC, AccountFlags::NON_NEGATIVE),
        Err(LedgerError::AccountConflict(POOL))
    );
    let merchant = Owner::Merchant(MerchantId(1));
    assert!(ledger.create_account(AccountId(50), merchant, Asset::USDC, AccountFlags::NON_NEGATIVE).is_ok());
    assert!(matches!(
        ledger.create_account(AccountId(51), merchant, Asset::USDC, AccountFlags::NON_NEGATIVE),
        Err(LedgerError::OwnerConflict { .. })
    ));
    assert_eq!(ledger.account_of(merchant, Asset::USDC).unwrap().id, AccountId(50));
}
