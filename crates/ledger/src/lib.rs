//! railyard's double-entry ledger, in the manner of TigerBeetle: accounts per (owner, asset),
//! transfers that are single-phase or pending → post / void, linked transfers that apply all or
//! nothing, and idempotent transfer ids. No I/O: the engine journals the transfers it applies.
//!
//! Every movement is a transfer from one account (debit) to another (credit) of the same asset,
//! so per asset the sums of debits and credits are equal at every step, for pending and posted
//! amounts alike. `Ledger::verify` checks this and the accounts' balance flags on demand; debug
//! builds check it after every operation.

mod account;
mod ledger;
mod transfer;

pub use account::{Account, AccountFlags, AccountId, Balance, Owner};
pub use ledger::{Applied, Ledger, LedgerError, LinkedError};
pub use transfer::{Op, PendingStatus, Transfer, TransferError, TransferId};
