//! railyard's rails: one network plus one asset family each, behind the [`Rail`] trait.
//!
//! An adapter declares what it supports ([`Capabilities`]), quotes fees, builds and signs a
//! settlement (returning the exact bytes, the transaction id and what it spends, so that the
//! engine journals them before the first broadcast), broadcasts bytes it is given, observes
//! the status of a settlement's versions, builds replacements (fee bump, cancel) that spend the
//! same nonce or inputs, and reports health. Adapters build requests and parse answers: they
//! never retry, sleep or keep a settlement's state — the engine does. An operation an adapter
//! does not support returns [`RailError::Unsupported`], never a silent no-op.

#[cfg(feature = "bitcoin")]
pub mod btc;
#[cfg(feature = "evm")]
pub mod evm;
pub mod sandbox;

use async_trait::async_trait;
use model::{Address, Amount, Asset, PaymentId, RailId, SignedTx, Spend};
pub use model::{Capabilities, Observation};
use serde::{Deserialize, Serialize};

/// One payout inside a settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub payment: PaymentId,
    pub destination: Address,
    pub amount: Amount,
}

/// What to settle: payouts of one asset on this rail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub asset: Asset,
    pub payouts: Vec<Payout>,
    /// How soon the batch should be final: the tightest deadline among its payouts, from now
    /// (`None`: no deadline). A rail whose fee buys speed (Bitcoin) picks its confirmation
    /// target from it.
    pub within_ms: Option<u64>,
}

/// A fee offer for a batch. `fee_max` is the most the settlement can cost, in `fee_asset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeQuote {
    pub fee_max: Amount,
    pub detail: FeeDetail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FeeDetail {
    /// EIP-1559 fields.
    Evm { gas_limit: u64, max_fee_per_gas: u128, max_priority_fee_per_gas: u128 },
    /// A fee rate in sat/kvB (sat/vB × 1000, as Core estimates it) and the transaction's
    /// size at the quote, in vbytes.
    Bitcoin { sat_per_kvb: u64, vbytes: u64 },
    /// The sandbox's flat fee per settlement.
    Sandbox { fee: Amount },
}

/// What the engine is watching: every signed version of one settlement (all spending the same
/// nonce or inputs), and the block the last observation saw it confirmed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    pub versions: Vec<SignedTx>,
    pub seen_in_block: Option<[u8; 32]>,
    /// Children railyard signed to pull a version in (child pays for parent): a confirmed
    /// version's fee paid includes its confirmed children's.
    pub children: Vec<SignedTx>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    Up { head: u64 },
    Down,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RailError {
    #[error("rail {rail} does not support {operation}")]
    Unsupported { rail: RailId, operation: &'static str },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("fee {fee} exceeds the configured cap {cap}")]
    FeeAboveCap { fee: Amount, cap: Amount },
    #[error("the rail's node is unreachable or failing: {0}")]
    Unavailable(String),
    #[error("the node refused the transaction: {0}")]
    Rejected(String),
    /// The settlement cannot be replaced now (a Bitcoin transaction whose outputs others
    /// already spend); a rail that can is asked to accelerate it instead.
    #[error("cannot be replaced: {0}")]
    NotReplaceable(String),
    #[error("rail configuration: {0}")]
    Config(String),
}

/// A rail adapter. See the module documentation for the contract.
#[async_trait]
pub trait Rail: Send + Sync + std::fmt::Debug {
    fn capabilities(&self) -> &Capabilities;

    /// The fee to settle `batch` now, within the configured cap.
    async fn quote(&self, batch: &Batch) -> Result<FeeQuote, RailError>;

    /// Builds and signs the settlement transaction for `batch` at `fee`, taking the next nonce
    /// (or inputs). Nothing is sent: the engine journals the result, then broadcasts it.
    async fn build(&self, batch: &Batch, fee: &FeeQuote) -> Result<SignedTx, RailError>;

    /// Sends signed bytes. Sending the same bytes again is harmless.
    async fn broadcast(&self, tx: &SignedTx) -> Result<(), RailError>;

    async fn observe(&self, watch: &Watch) -> Result<Observation, RailError>;

    /// A replacement of `previous` paying the same batch with a higher fee, spending the same
    /// nonce or inputs, so that at most one version can ever confirm.
    async fn bump(&self, batch: &Batch, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError>;

    /// A replacement of `previous` that pays nobody (it only consumes the nonce or inputs).
    async fn cancel(&self, previous: &SignedTx, fee: &FeeQuote) -> Result<SignedTx, RailError>;

    /// Child pays for parent: a transaction spending `parent`'s own change back to the rail,
    /// paying enough that the two together reach `fee`'s rate; a later child replaces the
    /// last of `children`. For a settlement `bump` answers [`RailError::NotReplaceable`].
    /// The child pays nobody and is not a version of the settlement.
    async fn accelerate(
        &self,
        parent: &SignedTx,
        children: &[SignedTx],
        fee: &FeeQuote,
    ) -> Result<SignedTx, RailError> {
        let _ = (parent, children, fee);
        Err(RailError::Unsupported { rail: self.capabilities().rail, operation: "accelerate" })
    }

    async fn health(&self) -> Health;

    /// What `destination` holds of `asset` on this rail's chain (reconciliation).
    async fn balance_of(&self, destination: &Address, asset: Asset) -> Result<Amount, RailError>;

    /// After a restart: the spends (nonces, inputs) the journal says railyard signed, so that
    /// nothing new is built on top of them, whether or not they reached the chain.
    fn recover_spends(&self, spends: &[Spend]) -> Result<(), RailError>;
}

/// Checks a batch against the rail's capabilities; adapters call it before building.
pub fn check_batch(capabilities: &Capabilities, batch: &Batch) -> Result<(), RailError> {
    let invalid = |reason: String| Err(RailError::InvalidBatch(reason));
    if batch.payouts.is_empty() || batch.payouts.len() > capabilities.batch_size_max {
        return invalid(format!("a settlement carries 1 to {} payouts", capabilities.batch_size_max));
    }
    if !capabilities.assets.contains(&batch.asset) {
        return invalid(format!("rail {} does not carry {}", capabilities.rail, batch.asset));
    }
    for payout in &batch.payouts {
        if payout.amount < capabilities.amount_min || payout.amount > capabilities.amount_max {
            return invalid(format!(
                "payment {} amount {} is outside the rail's limits",
                payout.payment, payout.amount
            ));
        }
        if !payout.destination.is_valid_on(capabilities.network) {
            return invalid(format!("payment {} destination is not valid on {}", payout.payment, capabilities.network));
        }
    }
    Amount::try_sum(batch.payouts.iter().map(|p| p.amount))
        .map_err(|_| RailError::InvalidBatch("total overflows".into()))?;
    Ok(())
}
