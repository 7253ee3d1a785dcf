//! railyard's router: the decisions, none of the doing. No I/O, no clock, no randomness:
//! every input (time, rail capabilities and health, fee estimates, pool balances, chain
//! observations) is an argument, and every output is a decision the engine carries out.
//!
//! - [`route`]: eligibility and scoring of rails per payment, with rule overrides and reasons.
//! - [`breaker`]: a circuit breaker per rail.
//! - [`batching`]: when a (rail, asset) batch becomes a settlement.
//! - [`anomaly`]: what to do about a settlement from what the chain says.
//! - [`pools`]: buffer pools as ledger accounts; reservations as pending transfers.

pub mod anomaly;
pub mod batching;
pub mod breaker;
pub mod pools;
pub mod route;

pub use anomaly::{Action, AnomalyPolicy, SettlementWatch, assess};
pub use batching::{BatchPolicy, Batcher, Flush, FlushReason};
pub use breaker::{Breaker, BreakerConfig, BreakerState, Outcome};
pub use pools::{AlertKind, PoolAlert, PoolConfig, PoolError, Pools, Reserve};
pub use route::{Decision, Ineligible, RailState, RailVerdict, Router, Rule, RuleError, Score, Verdict, Weights};
