//! Transfers: the only way money moves. Single-phase, or two-phase (pending, then posted in
//! full or in part, or voided — each pending transfer resolves at most once).

use std::fmt;

use model::Amount;
use serde::{Deserialize, Serialize};

use crate::account::AccountId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub u128);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Moves `amount` at once.
    Single { debit: AccountId, credit: AccountId, amount: Amount },
    /// Reserves `amount`: counted against the debit account's limit until posted or voided.
    Pending { debit: AccountId, credit: AccountId, amount: Amount },
    /// Posts `amount` (at most the pending amount) of a pending transfer; the rest is released.
    Post { pending: TransferId, amount: Amount },
    /// Releases a pending transfer entirely.
    Void { pending: TransferId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Transfer {
    pub id: TransferId,
    pub op: Op,
}

/// How a pending transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PendingStatus {
    Pending,
    Posted { amount: Amount, by: TransferId },
    Voided { by: TransferId },
}

/// Why a transfer was refused. A refused transfer changes nothing and does not consume its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("transfer id {0} was already used for a different transfer")]
    IdReused(TransferId),
    #[error("account {0} does not exist")]
    AccountNotFound(AccountId),
    #[error("debit and credit are the same account {0}")]
    SameAccount(AccountId),
    #[error("accounts {debit} and {credit} hold different assets")]
    AssetMismatch { debit: AccountId, credit: AccountId },
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("account {0} has too little available: debits would exceed credits")]
    ExceedsCredits(AccountId),
    #[error("account {0}: credits would exceed debits")]
    ExceedsDebits(AccountId),
    #[error("balance of account {0} would overflow")]
    Overflow(AccountId),
    #[error("pending transfer {0} does not exist")]
    PendingNotFound(TransferId),
    #[error("transfer {0} is not a pending transfer")]
    NotPending(TransferId),
    #[error("pending transfer {0} was already posted")]
    AlreadyPosted(TransferId),
    #[error("pending transfer {0} was already voided")]
    AlreadyVoided(TransferId),
    #[error("post amount exceeds pending transfer {0}")]
    PostExceedsPending(TransferId),
}
