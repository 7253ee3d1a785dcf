//! `Event`: the one closed enum of everything that changes railyard's state. Each is appended
//! to the journal before anything outside the process learns of it (rule 2), and replaying the
//! events in order rebuilds the state exactly (rule 6).

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::asset::Asset;
use crate::ids::{BatchId, MerchantId, PaymentId, RailId, SettlementId, Timestamp};
use crate::payment::Payment;
use crate::settlement::{DeathProof, Settlement, SignedTx};

/// One notice of `Event::Notifications`: its id (derived from the payment and what happened,
/// so the same news is never told twice under two ids), the payment, and the state to tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub id: u128,
    pub payment: PaymentId,
    pub state: crate::payment::PaymentState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A merchant's batch, accepted whole: its header and first payments. A batch too large
    /// for one journal record continues in `PaymentsAccepted` events of the same commit, up to
    /// `count` payments in all.
    BatchAccepted {
        batch: BatchId,
        merchant: MerchantId,
        idempotency_key: String,
        body_hash: [u8; 32],
        count: u32,
        payments: Vec<Payment>,
        at: Timestamp,
    },
    /// Payments that wait for a route: a batch's, in one record (or several of one commit
    /// for a large batch), or those put back after their settlement died.
    PaymentsQueued {
        payments: Vec<PaymentId>,
        at: Timestamp,
    },
    SettlementPlanned {
        settlement: Settlement,
        at: Timestamp,
    },
    /// A planned settlement given back before signing (its payments return to the queue).
    SettlementReleased {
        settlement: SettlementId,
        at: Timestamp,
    },
    /// The exact bytes to broadcast, journaled before the first broadcast.
    SettlementSigned {
        settlement: SettlementId,
        tx: SignedTx,
        at: Timestamp,
    },
    SettlementBroadcast {
        settlement: SettlementId,
        txid: [u8; 32],
        at: Timestamp,
    },
    /// A fee bump: a replacement paying the same legs, spending the same nonce or inputs.
    SettlementReplaced {
        settlement: SettlementId,
        tx: SignedTx,
        at: Timestamp,
    },
    /// A cancel: a replacement paying nobody, spending the same nonce or inputs.
    SettlementCancelling {
        settlement: SettlementId,
        tx: SignedTx,
        at: Timestamp,
    },
    SettlementConfirmed {
        settlement: SettlementId,
        txid: [u8; 32],
        depth: u32,
        at: Timestamp,
    },
    SettlementReorged {
        settlement: SettlementId,
        at: Timestamp,
    },
    SettlementFinal {
        settlement: SettlementId,
        txid: [u8; 32],
        fee_paid: Amount,
        at: Timestamp,
    },
    SettlementDead {
        settlement: SettlementId,
        proof: DeathProof,
        /// The fee its own mined transaction was charged (a revert or a cancel), as the chain
        /// reported it; zero when another transaction took its nonce or inputs.
        fee_burnt: Amount,
        at: Timestamp,
    },
    PaymentHeld {
        payment: PaymentId,
        reason: String,
        at: Timestamp,
    },
    PaymentFailed {
        payment: PaymentId,
        reason: String,
        at: Timestamp,
    },
    PaymentReissued {
        payment: PaymentId,
        previous: SettlementId,
        at: Timestamp,
    },
    // New variants go last: the journal encodes the variant's position.
    /// An operator stopped new planning on a rail (settlements in flight stay watched).
    RailPaused {
        rail: RailId,
        operator: String,
        reason: String,
        at: Timestamp,
    },
    RailResumed {
        rail: RailId,
        operator: String,
        reason: String,
        at: Timestamp,
    },
    /// An operator moved a rail's queued payments to other rails (the audit record).
    RailDrained {
        rail: RailId,
        moved: u32,
        operator: String,
        reason: String,
        at: Timestamp,
    },
    /// An operator resolved a held payment.
    PaymentResolved {
        payment: PaymentId,
        resolution: Resolution,
        operator: String,
        reason: String,
        at: Timestamp,
    },
    /// Payments reached a state their merchants are to be told of (a final settlement's
    /// payouts, a failure, a hold). Journaled right after the event that caused them, in the
    /// same commit, so no notice is lost or invented.
    Notifications {
        notices: Vec<Notification>,
        at: Timestamp,
    },
    /// The merchants' endpoints acknowledged these notifications.
    NotificationsDelivered {
        ids: Vec<u128>,
        at: Timestamp,
    },
    /// Treasury moved liquidity into a rail's pool (a deposit to its hot wallet).
    PoolFunded {
        rail: RailId,
        asset: Asset,
        amount: Amount,
        transfer: u128,
        at: Timestamp,
    },
    /// More payments of an accepted batch (see `BatchAccepted`).
    PaymentsAccepted {
        batch: BatchId,
        payments: Vec<Payment>,
        at: Timestamp,
    },
    /// Reconciliation found a final settlement no longer on its chain at final depth (a reorg
    /// deeper than the rail's finality). Its payments stay settled in the book (the ledger
    /// posted them) but are held for an operator, their merchants are told, and `tx` (the
    /// version that was final: the same nonce or inputs, so it can pay at most once) is
    /// broadcast again until the chain has it at final depth again.
    FinalityLost {
        settlement: SettlementId,
        rail: RailId,
        tx: SignedTx,
        payments: Vec<PaymentId>,
        at: Timestamp,
    },
    /// Reconciliation found a settlement whose finality was lost back at final depth.
    FinalityRestored {
        settlement: SettlementId,
        at: Timestamp,
    },
    /// An API key was created; only the hash of its secret is kept.
    ApiKeyCreated {
        key: [u8; 32],
        role: crate::access::Role,
        merchant: Option<MerchantId>,
        label: String,
        by: String,
        at: Timestamp,
    },
    ApiKeyRevoked {
        key: [u8; 32],
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// Treasury changed a pool's thresholds (they override the configuration file's from now
    /// on, across restarts).
    PoolThresholdsSet {
        rail: RailId,
        asset: Asset,
        min: Amount,
        target: Amount,
        max: Amount,
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// Treasury changed a priority class's parameters (they win over the file's from now on).
    ClassSet {
        class: crate::ids::ClassName,
        weight: u32,
        deadline_default_ms: u64,
        age_max_ms: Option<u64>,
        urgent: bool,
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// Treasury replaced the routing rules (they win over the file's from now on).
    RoutingRulesSet {
        rules: Vec<crate::rule::Rule>,
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// A merchant's webhook endpoint was set (`None`: removed).
    WebhookEndpointSet {
        merchant: MerchantId,
        url: Option<String>,
        by: String,
        at: Timestamp,
    },
    /// Treasury set a merchant's guards (`None`: removed). Payouts past intake are judged by
    /// them again just before signing.
    GuardsSet {
        merchant: MerchantId,
        policy: Option<crate::guard::GuardPolicy>,
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// Guards hold a payout (it is `Held` in the book by the `PaymentHeld` before this one):
    /// why, and what releases it. Again for a payout already guarded: its hold now reads so.
    PaymentGuarded {
        payment: PaymentId,
        hold: crate::guard::GuardHold,
        /// "railyard" when the engine held it; a treasury key's public id when it released
        /// some of the reasons (the rest still hold it).
        by: String,
        reason: String,
        at: Timestamp,
    },
    /// A treasury key approved a large payout held by guards.
    PaymentApproved {
        payment: PaymentId,
        by: String,
        at: Timestamp,
    },
    /// Child pays for parent: `child` spends an output of one of the settlement's versions
    /// back to the rail, paying for both (a Bitcoin settlement whose outputs others spend
    /// cannot be replaced). Journaled before it is broadcast; its fee counts toward the
    /// settlement's, within the fee reserved.
    SettlementAccelerated {
        settlement: SettlementId,
        child: SignedTx,
        at: Timestamp,
    },
}

/// What an operator decides for a held payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Not in flight: queue it again (the router picks a rail afresh).
    Retry,
    /// Not in flight: give up; the merchant is told it failed.
    Fail,
    /// In flight: go back to watching its settlement (and send its bytes again).
    Resume,
}

impl Event {
    pub fn at(&self) -> Timestamp {
        match self {
            Event::BatchAccepted { at, .. }
            | Event::PaymentsQueued { at, .. }
            | Event::SettlementPlanned { at, .. }
            | Event::SettlementReleased { at, .. }
            | Event::SettlementSigned { at, .. }
            | Event::SettlementBroadcast { at, .. }
            | Event::SettlementReplaced { at, .. }
            | Event::SettlementCancelling { at, .. }
            | Event::SettlementConfirmed { at, .. }
            | Event::SettlementReorged { at, .. }
            | Event::SettlementFinal { at, .. }
            | Event::SettlementDead { at, .. }
            | Event::PaymentHeld { at, .. }
            | Event::PaymentFailed { at, .. }
            | Event::PoolFunded { at, .. }
            | Event::PaymentsAccepted { at, .. }
            | Event::RailPaused { at, .. }
            | Event::RailResumed { at, .. }
            | Event::RailDrained { at, .. }
            | Event::PaymentResolved { at, .. }
            | Event::Notifications { at, .. }
            | Event::NotificationsDelivered { at, .. }
            | Event::PaymentReissued { at, .. }
            | Event::FinalityLost { at, .. }
            | Event::FinalityRestored { at, .. }
            | Event::ApiKeyCreated { at, .. }
            | Event::ApiKeyRevoked { at, .. }
            | Event::WebhookEndpointSet { at, .. }
            | Event::PoolThresholdsSet { at, .. }
            | Event::ClassSet { at, .. }
            | Event::RoutingRulesSet { at, .. }
            | Event::GuardsSet { at, .. }
            | Event::PaymentGuarded { at, .. }
            | Event::PaymentApproved { at, .. }
            | Event::SettlementAccelerated { at, .. } => *at,
        }
    }
}

/// The first byte of every encoded event: bumped when the encoding changes incompatibly, so an
/// old journal is recognised rather than misread.
///
/// Version 2: a batch may span several records (`count`, `PaymentsAccepted`).
/// Version 3: a settlement records its fee asset.
/// Version 4: a payment record keeps its steps and last reason; the state keeps API keys,
/// webhook endpoints and pool thresholds (history records and snapshots change with them).
/// Version 5: the state keeps guards (snapshots change with them).
/// Version 6: a settlement record keeps its children (child pays for parent).
/// Version 7: queued payments, notifications and deliveries are one record for many
/// (`PaymentsQueued`, `Notifications`, `NotificationsDelivered`): three records per payment
/// became a few per batch and settlement.
/// Version 8: the history store keeps finished payments in groups, one per batch and commit
/// (the engine's `history` module), not one entry each.
pub const ENCODING_VERSION: u8 = 8;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "event encoding version {found} is not supported (expected {ENCODING_VERSION}): this journal was written by another railyard version; open it with that version or start a new journal"
    )]
    Version { found: u8 },
    #[error("event is empty")]
    Empty,
    #[error("event does not decode: {0}")]
    Malformed(String),
}

impl Event {
    /// The journal's byte form: a version byte, then postcard (compact and deterministic).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![ENCODING_VERSION]).expect("events always serialize")
    }

    /// `encode`, written through `scratch` (kept by the caller between calls) into a list of
    /// exactly the record's size: a large record is not grown by doubling, which frees a block
    /// of each size on the way and fragments the allocator's heap.
    pub fn encode_via(&self, scratch: &mut Vec<u8>) -> Vec<u8> {
        scratch.clear();
        scratch.push(ENCODING_VERSION);
        postcard::to_io(self, &mut *scratch).expect("events always serialize");
        scratch.as_slice().to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != ENCODING_VERSION {
            return Err(DecodeError::Version { found: version });
        }
        postcard::from_bytes(body).map_err(|error| DecodeError::Malformed(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_through_a_reused_scratch_gives_the_same_bytes_at_their_exact_size() {
        let queued = |count: u128| Event::PaymentsQueued {
            payments: (0..count).map(|i| PaymentId(i << 40 | i)).collect(),
            at: Timestamp(1_700_000_000_000),
        };
        let mut scratch = Vec::new();
        // A large record, then a small one through the same scratch: nothing of the first leaks
        // into the second, and each comes out at its own size.
        for event in [queued(20_000), queued(3)] {
            let bytes = event.encode_via(&mut scratch);
            assert_eq!(bytes, event.encode());
            assert_eq!(bytes.capacity(), bytes.len());
            assert_eq!(Event::decode(&bytes).unwrap(), event);
        }
    }
}
