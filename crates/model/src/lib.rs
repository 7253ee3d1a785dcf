//! railyard's domain types: money, assets, networks, addresses, payments, settlements and the
//! events that change them. No I/O, no clock, no randomness: everything here is a pure value or
//! a pure function of its inputs.

pub mod access;
pub mod address;
pub mod amount;
pub mod asset;
pub mod book;
pub mod event;
pub mod guard;
pub mod ids;
pub mod network;
pub mod open;
pub mod payment;
pub mod retired;
pub mod rule;
pub mod settlement;

pub use access::{Access, AccessError, ApiKey, Role};
pub use address::{Address, AddressError};
pub use amount::{Amount, AmountError};
pub use asset::{Asset, AssetError};
pub use book::{BatchRecord, Book, BookError, PaymentRecord, SettlementRecord, SettlementState, Step};
pub use event::{Event, Notification, Resolution};
pub use guard::{GuardHold, GuardKind, GuardPolicy, Guards};
pub use ids::{BatchId, ClassName, MerchantId, Name, NameError, PaymentId, RailId, SettlementId, Timestamp};
pub use network::{BitcoinNetwork, ChainId, Network, NetworkError};
pub use open::Payments;
pub use payment::{IllegalTransition, Payment, PaymentError, PaymentState};
pub use retired::Retired;
pub use rule::Rule;
pub use settlement::{Capabilities, DeathProof, Leg, Observation, Settlement, SignedTx, Spend};
