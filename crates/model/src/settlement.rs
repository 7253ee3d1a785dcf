//! `Settlement`: what goes on a rail — one transaction paying one or more payments — and the
//! exact transaction railyard signed for it, journaled before broadcast (rule 3).

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::amount::Amount;
use crate::asset::Asset;
use crate::ids::{PaymentId, RailId, SettlementId};
use crate::network::Network;

/// One payment's share of a settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub payment: PaymentId,
    pub destination: Address,
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub id: SettlementId,
    pub rail: RailId,
    pub network: Network,
    pub asset: Asset,
    pub legs: Vec<Leg>,
    /// The asset the rail's fees are paid in, and the fee estimate reserved from the rail's
    /// pool of it alongside the legs. Both are facts of the decision, so replay never needs
    /// today's configuration to know them (a rail removed from it stays replayable).
    pub fee_asset: Asset,
    pub fee_reserved: Amount,
}

impl Settlement {
    /// The sum of the legs, or `None` on overflow.
    pub fn total(&self) -> Option<Amount> {
        Amount::try_sum(self.legs.iter().map(|leg| leg.amount)).ok()
    }
}

/// What a signed transaction consumes, so that any replacement provably conflicts with it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Spend {
    /// EVM: the sender's nonce.
    Nonce { sender: [u8; 20], nonce: u64 },
    /// Bitcoin: the outpoints spent, as (txid, vout).
    Inputs(Vec<([u8; 32], u32)>),
}

/// A signed transaction exactly as it will be broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub txid: [u8; 32],
    pub raw: Vec<u8>,
    pub spend: Spend,
    pub fee: Amount,
}

impl SignedTx {
    /// The size in virtual bytes (what a Bitcoin fee rate is paid on), when the bytes are a
    /// Bitcoin transaction.
    pub fn bitcoin_vbytes(&self) -> Option<u64> {
        let tx: bitcoin::Transaction = bitcoin::consensus::encode::deserialize(&self.raw).ok()?;
        u64::try_from(tx.vsize()).ok()
    }

    /// Whether this transaction spends an output of the transaction `parent` (a child).
    pub fn spends_from(&self, parent: &[u8; 32]) -> bool {
        matches!(&self.spend, Spend::Inputs(inputs) if inputs.iter().any(|(txid, _)| txid == parent))
    }
}

/// Why an attempt is known to be dead, so that reissuing it cannot pay twice (rule 3). There
/// is deliberately no variant for "timed out" or "not seen": probably dead is not dead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeathProof {
    /// A transaction spending the same nonce or inputs is final.
    ConflictFinal { txid: [u8; 32] },
    /// The attempt's own transaction reverted, and the revert is final.
    RevertedFinal { txid: [u8; 32] },
    /// The attempt's cancel (a replacement paying nobody) is final.
    CancelFinal { txid: [u8; 32] },
}

/// What a rail can do, as its adapter declares it; the router plans only within these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub rail: RailId,
    pub network: Network,
    /// The asset fees are paid in (ETH on EVM chains, BTC on Bitcoin).
    pub fee_asset: Asset,
    pub assets: Vec<Asset>,
    pub amount_min: Amount,
    pub amount_max: Amount,
    pub batch_size_max: usize,
    pub confirmations_final: u32,
    pub can_replace: bool,
    pub finality_expected_ms: u64,
}

/// How a settlement stands on chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// Known to the node, not in a block.
    Pending,
    /// Version `txid` is in block `block`, `depth` blocks deep (1 = in the latest block);
    /// `fee_paid` is what the chain charged for it (an EVM receipt's gas used times its
    /// effective gas price), at most the fee the version offered.
    Confirmed { txid: [u8; 32], block: [u8; 32], depth: u64, fee_paid: Amount },
    /// Version `txid` is in a block but its execution failed (its fee is charged all the same).
    Reverted { txid: [u8; 32], block: [u8; 32], depth: u64, fee_paid: Amount },
    /// Transaction `by`, none of the versions, spent the nonce or inputs and is `depth` deep:
    /// once final, this attempt is provably dead.
    Replaced { by: [u8; 32], depth: u64 },
    /// None of the versions is in a block, yet their nonce or inputs are spent, and the node
    /// cannot say by which transaction (it keeps no state that old): the attempt may be dead
    /// or may have been paid by a transaction railyard does not know. Only a person can tell.
    SpenderUnknown { reason: String },
    /// The block it was seen confirmed in is no longer on the chain.
    ReorgedOut,
    /// Not in a block and unknown to the node: the bytes may be broadcast again.
    Dropped,
}
