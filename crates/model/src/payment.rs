//! `Payment` and its lifecycle: the state machine of design.md, with every legal transition
//! listed once and a typed error for every other.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::address::{Address, AddressError};
use crate::amount::Amount;
use crate::asset::Asset;
use crate::ids::{BatchId, ClassName, MerchantId, PaymentId, Timestamp};
use crate::network::Network;

pub const REFERENCE_LEN_MAX: usize = 128;
pub const METADATA_ENTRIES_MAX: usize = 16;
pub const METADATA_KEY_LEN_MAX: usize = 64;
pub const METADATA_VALUE_LEN_MAX: usize = 256;
pub const NETWORKS_MAX: usize = 8;

/// One payout a merchant asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: PaymentId,
    pub batch: BatchId,
    pub merchant: MerchantId,
    /// The merchant's own reference for this payout (an invoice or payroll line).
    pub reference: String,
    pub amount: Amount,
    pub asset: Asset,
    pub destination: Address,
    /// The networks the merchant allows this payout on; the destination is valid on each.
    pub networks: Vec<Network>,
    pub class: ClassName,
    pub deadline: Option<Timestamp>,
    pub metadata: BTreeMap<String, String>,
}

/// Why a payment cannot be accepted. Each names the field and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("amount must be greater than zero")]
    ZeroAmount,
    #[error("reference must be 1 to {REFERENCE_LEN_MAX} characters")]
    Reference,
    #[error("networks must list 1 to {NETWORKS_MAX} networks")]
    NetworkCount,
    #[error("network {network} is listed twice")]
    DuplicateNetwork { network: Network },
    #[error("destination: {0}")]
    Destination(#[from] AddressError),
    #[error(
        "metadata must have at most {METADATA_ENTRIES_MAX} entries, keys of 1 to \
         {METADATA_KEY_LEN_MAX} and values of at most {METADATA_VALUE_LEN_MAX} characters"
    )]
    Metadata,
}

impl Payment {
    /// Checks what a payment must satisfy on its own; limits that depend on configuration
    /// (known assets, amount limits per rail) are checked by intake.
    pub fn validate(&self) -> Result<(), PaymentError> {
        if self.amount.is_zero() {
            return Err(PaymentError::ZeroAmount);
        }
        if self.reference.is_empty() || self.reference.chars().count() > REFERENCE_LEN_MAX {
            return Err(PaymentError::Reference);
        }
        if self.networks.is_empty() || self.networks.len() > NETWORKS_MAX {
            return Err(PaymentError::NetworkCount);
        }
        for (i, network) in self.networks.iter().enumerate() {
            if self.networks[..i].contains(network) {
                return Err(PaymentError::DuplicateNetwork { network: *network });
            }
            if !self.destination.is_valid_on(*network) {
                return Err(self.destination.mismatch(*network).into());
            }
        }
        let metadata_ok = self.metadata.len() <= METADATA_ENTRIES_MAX
            && self.metadata.iter().all(|(key, value)| {
                !key.is_empty()
                    && key.chars().count() <= METADATA_KEY_LEN_MAX
                    && value.chars().count() <= METADATA_VALUE_LEN_MAX
            });
        if !metadata_ok {
            return Err(PaymentError::Metadata);
        }
        Ok(())
    }
}

/// Where a payment stands. See design.md, "Lifecycle of a payment".
///
/// `Held` remembers whether an attempt is still live on a rail (`in_flight`): a held payment
/// whose transaction may still confirm must never go back to the queue, only back to being
/// watched or, once its attempt is provably dead, to `RolledBack`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentState {
    Accepted,
    Queued,
    Planned,
    Signed,
    Broadcast,
    Confirmed,
    Settled,
    Held { in_flight: bool },
    Failed,
    RolledBack,
    Reissued,
}

/// A transition the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("illegal payment transition from {from} to {to}")]
pub struct IllegalTransition {
    pub from: PaymentState,
    pub to: PaymentState,
}

impl PaymentState {
    /// Whether an attempt of this payment may be on a rail: its transaction may have been
    /// broadcast (or may be broadcast by a restart), so it could still confirm.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            PaymentState::Signed
                | PaymentState::Broadcast
                | PaymentState::Confirmed
                | PaymentState::Held { in_flight: true }
        )
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, PaymentState::Settled | PaymentState::Failed)
    }

    /// The single table of legal arrows.
    pub fn can_transition(self, to: PaymentState) -> bool {
        use PaymentState::*;
        match (self, to) {
            (Accepted, Queued | Failed | Held { in_flight: false }) => true,
            (Queued, Planned | Failed | Held { in_flight: false }) => true,
            // Released before anything was signed: nothing can be on a rail.
            (Planned, Signed | Queued | Held { in_flight: false }) => true,
            // Signed bytes may already be out (journal before broadcast), so the only way back
            // is a proof of death: RolledBack.
            (Signed, Broadcast | RolledBack | Held { in_flight: true }) => true,
            (Broadcast, Confirmed | RolledBack | Held { in_flight: true }) => true,
            // Reorged out goes back to being watched; reverted and final is RolledBack.
            (Confirmed, Confirmed | Settled | Broadcast | RolledBack | Held { in_flight: true }) => true,
            (Held { in_flight: false }, Queued | Failed) => true,
            // The chain's outcome applies to a held payment too: it was paid, or provably not.
            (Held { in_flight: true }, Broadcast | Confirmed | Settled | RolledBack) => true,
            (RolledBack, Reissued | Failed | Held { in_flight: false }) => true,
            (Reissued, Queued) => true,
            _ => false,
        }
    }

    pub fn transition(self, to: PaymentState) -> Result<PaymentState, IllegalTransition> {
        if self.can_transition(to) { Ok(to) } else { Err(IllegalTransition { from: self, to }) }
    }

    /// Every state, for tables and exhaustive tests.
    pub const ALL: [PaymentState; 12] = [
        PaymentState::Accepted,
        PaymentState::Queued,
        PaymentState::Planned,
        PaymentState::Signed,
        PaymentState::Broadcast,
        PaymentState::Confirmed,
        PaymentState::Settled,
        PaymentState::Held { in_flight: false },
        PaymentState::Held { in_flight: true },
        PaymentState::Failed,
        PaymentState::RolledBack,
        PaymentState::Reissued,
    ];
}

impl fmt::Display for PaymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PaymentState {
    /// The state's name, as `Display` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Accepted => "accepted",
            PaymentState::Queued => "queued",
            PaymentState::Planned => "planned",
            PaymentState::Signed => "signed",
            PaymentState::Broadcast => "broadcast",
            PaymentState::Confirmed => "confirmed",
            PaymentState::Settled => "settled",
            PaymentState::Held { in_flight: false } => "held",
            PaymentState::Held { in_flight: true } => "held(in-flight)",
            PaymentState::Failed => "failed",
            PaymentState::RolledBack => "rolled_back",
            PaymentState::Reissued => "reissued",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PaymentState::*;

    /// The whole legal table, written out independently of `can_transition`: any change to the
    /// state machine must change this list too.
    const LEGAL: &[(PaymentState, PaymentState)] = &[
        (Accepted, Queued),
        (Accepted, Failed),
        (Accepted, Held { in_flight: false }),
        (Queued, Planned),
        (Queued, Failed),
        (Queued, Held { in_flight: false }),
        (Planned, Signed),
        (Planned, Queued),
        (Planned, Held { in_flight: false }),
        (Signed, Broadcast),
        (Signed, RolledBack),
        (Signed, Held { in_flight: true }),
        (Broadcast, Confirmed),
        (Broadcast, RolledBack),
        (Broadcast, Held { in_flight: true }),
        (Confirmed, Confirmed),
        (Confirmed, Settled),
        (Confirmed, Broadcast),
        (Confirmed, RolledBack),
        (Confirmed, Held { in_flight: true }),
        (Held { in_flight: false }, Queued),
        (Held { in_flight: false }, Failed),
        (Held { in_flight: true }, Broadcast),
        (Held { in_flight: true }, Confirmed),
        (Held { in_flight: true }, Settled),
        (Held { in_flight: true }, RolledBack),
        (RolledBack, Reissued),
        (RolledBack, Failed),
        (RolledBack, Held { in_flight: false }),
        (Reissued, Queued),
    ];

    #[test]
    fn every_pair_is_legal_exactly_when_listed() {
        for from in PaymentState::ALL {
            for to in PaymentState::ALL {
                let listed = LEGAL.contains(&(from, to));
                assert_eq!(from.can_transition(to), listed, "{from} -> {to}");
                match from.transition(to) {
                    Ok(next) => assert_eq!(next, to),
                    Err(error) => assert_eq!(error, IllegalTransition { from, to }),
                }
            }
        }
    }

    #[test]
    fn no_arrow_leaves_a_terminal_state_or_requeues_a_live_attempt() {
        for from in PaymentState::ALL {
            for to in PaymentState::ALL {
                if from.is_terminal() {
                    assert!(!from.can_transition(to), "{from} is terminal but goes to {to}");
                }
                // Rule 3: a live attempt never returns to the queue without a proof of death.
                if from.is_in_flight() && matches!(to, Queued | Planned | Reissued | Failed) {
                    assert!(!from.can_transition(to), "{from} -> {to} would allow a double pay");
                }
            }
        }
    }
}
