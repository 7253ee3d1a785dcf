//! Anomaly rules: from what the chain says of a settlement, what to do next. Each rule is a
//! decision the engine carries out (and journals); nothing here acts.
//!
//! The order matters and is the policy: finality comes from depth; death
//! needs a final proof (rule 3); a drop is answered with the same bytes first; a stuck
//! settlement is bumped within a budget, then cancelled.

use model::{DeathProof, Observation, Timestamp};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyPolicy {
    /// A settlement pending this long after its last (re)broadcast or bump counts as stuck.
    pub stuck_after_ms: u64,
    /// Fee bumps allowed before cancelling.
    pub bump_budget: u32,
    /// Re-broadcasts of the same bytes after drops before holding for the operator.
    pub rebroadcasts_max: u32,
    /// Attempts of one payment (the first and each reissue after a proof of death) before the
    /// next death holds it for the operator instead of reissuing it again: a batch that
    /// reverts every time would otherwise burn a fee on every round for ever.
    #[serde(default = "attempts_max_default")]
    pub attempts_max: u32,
}

fn attempts_max_default() -> u32 {
    3
}

impl Default for AnomalyPolicy {
    fn default() -> AnomalyPolicy {
        AnomalyPolicy { stuck_after_ms: 120_000, bump_budget: 3, rebroadcasts_max: 5, attempts_max: 3 }
    }
}

/// What the engine knows of one settlement under watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementWatch {
    pub observation: Observation,
    /// The rail's depth for finality.
    pub confirmations_final: u64,
    /// When it was last (re)broadcast, bumped or cancelled.
    pub last_action_at: Timestamp,
    pub bumps: u32,
    pub rebroadcasts: u32,
    /// A cancel has been broadcast.
    pub cancelling: bool,
    /// The txids of its cancels (confirmed cancels pay nobody).
    pub cancels: Vec<[u8; 32]>,
    /// The rail's last quote for a replacement exceeded its fee cap.
    pub fee_above_cap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Wait,
    /// Broadcast the same bytes again.
    Rebroadcast,
    Bump,
    Cancel,
    /// Final: post the reservation, mark the payments settled.
    Finalize {
        txid: [u8; 32],
    },
    /// Provably dead: void the reservation, release the payments for reissue.
    RollBack {
        proof: DeathProof,
    },
    /// It was reorged out: keep watching, its bytes may be broadcast again.
    WatchAgain,
    Hold {
        reason: String,
    },
}

pub fn assess(watch: &SettlementWatch, policy: &AnomalyPolicy, now: Timestamp) -> Action {
    let final_depth = |depth: u64| depth >= watch.confirmations_final;
    match &watch.observation {
        Observation::Confirmed { txid, depth, .. } if final_depth(*depth) => {
            if watch.cancels.contains(txid) {
                Action::RollBack { proof: DeathProof::CancelFinal { txid: *txid } }
            } else {
                Action::Finalize { txid: *txid }
            }
        }
        // A cancel that reverted still spent the nonce and paid nobody: as dead as a cancel
        // that went through (found by the simulator; the revert proof must be a paying
        // version).
        Observation::Reverted { txid, depth, .. } if final_depth(*depth) && watch.cancels.contains(txid) => {
            Action::RollBack { proof: DeathProof::CancelFinal { txid: *txid } }
        }
        Observation::Reverted { txid, depth, .. } if final_depth(*depth) => {
            Action::RollBack { proof: DeathProof::RevertedFinal { txid: *txid } }
        }
        Observation::Replaced { by, depth } if final_depth(*depth) => {
            Action::RollBack { proof: DeathProof::ConflictFinal { txid: *by } }
        }
        Observation::Confirmed { .. } | Observation::Reverted { .. } | Observation::Replaced { .. } => Action::Wait,
        // Reissuing could pay twice (the unknown spender may be a version of this very
        // settlement rebuilt elsewhere), waiting learns nothing new: a person must look.
        Observation::SpenderUnknown { reason } => Action::Hold {
            reason: format!(
                "its nonce or inputs are spent, and the node cannot say by which transaction ({reason}): check the sender's history on a full node or an explorer, then resolve it"
            ),
        },
        Observation::ReorgedOut => Action::WatchAgain,
        Observation::Dropped if watch.rebroadcasts < policy.rebroadcasts_max => Action::Rebroadcast,
        Observation::Dropped => Action::Hold { reason: format!("dropped {} times", watch.rebroadcasts + 1) },
        Observation::Pending => {
            let stuck = now.saturating_since(watch.last_action_at) >= policy.stuck_after_ms;
            if !stuck {
                Action::Wait
            } else if watch.cancelling {
                // Waiting on for ever would leave the payments without a reason (found by
                // the simulator behind a nonce the node refused).
                Action::Hold {
                    reason:
                        "stuck, and so is its cancel: an earlier transaction of the rail may be holding back its nonce"
                            .into(),
                }
            } else if watch.fee_above_cap {
                Action::Hold { reason: "stuck, and the fee to unstick it is above the cap".into() }
            } else if watch.bumps < policy.bump_budget {
                Action::Bump
            } else {
                Action::Cancel
            }
        }
    }
}
