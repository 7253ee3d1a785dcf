//! Accounts: who holds money (a merchant's balance, a rail's buffer pool, what is in flight,
//! fees, what has been paid out) and the balance constraints each must keep.

use std::fmt;

use model::{Amount, Asset, MerchantId, RailId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub u128);

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// Whose money an account holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    /// A merchant's balance with railyard.
    Merchant(MerchantId),
    /// A rail's buffer pool: the liquidity railyard holds on that rail.
    Pool(RailId),
    /// Reserved for settlements under way on a rail.
    InFlight(RailId),
    /// Network fees paid on a rail.
    Fees(RailId),
    /// Money that has left railyard for good: confirmed payouts.
    PaidOut,
    /// The outside world funding railyard (deposits); the one account allowed to go negative.
    Treasury,
}

/// Balance constraints, checked on every transfer with pending amounts included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountFlags {
    /// debits (pending + posted) may never exceed posted credits: the account cannot go negative.
    pub debits_must_not_exceed_credits: bool,
    /// credits (pending + posted) may never exceed posted debits.
    pub credits_must_not_exceed_debits: bool,
}

impl AccountFlags {
    pub const NON_NEGATIVE: AccountFlags =
        AccountFlags { debits_must_not_exceed_credits: true, credits_must_not_exceed_debits: false };
    pub const UNCONSTRAINED: AccountFlags =
        AccountFlags { debits_must_not_exceed_credits: false, credits_must_not_exceed_debits: false };
}

/// The four running sums of an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Balance {
    pub debits_pending: Amount,
    pub debits_posted: Amount,
    pub credits_pending: Amount,
    pub credits_posted: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub owner: Owner,
    pub asset: Asset,
    pub flags: AccountFlags,
    pub balance: Balance,
}

impl Account {
    pub fn new(id: AccountId, owner: Owner, asset: Asset, flags: AccountFlags) -> Account {
        Account { id, owner, asset, flags, balance: Balance::default() }
    }

    /// Posted credits less all debits: what the account can still spend. `None` when debits
    /// exceed credits (only possible without `debits_must_not_exceed_credits`).
    pub fn available(&self) -> Option<Amount> {
        let b = &self.balance;
        b.credits_posted.checked_sub(b.debits_posted)?.checked_sub(b.debits_pending)
    }

    /// Whether the flags hold for the current balance.
    pub fn flags_hold(&self) -> bool {
        let b = &self.balance;
        let debits = b.debits_pending.checked_add(b.debits_posted);
        let credits = b.credits_pending.checked_add(b.credits_posted);
        let debits_ok = !self.flags.debits_must_not_exceed_credits || debits.is_some_and(|d| d <= b.credits_posted);
        let credits_ok = !self.flags.credits_must_not_exceed_debits || credits.is_some_and(|c| c <= b.debits_posted);
        debits_ok && credits_ok
    }
}
