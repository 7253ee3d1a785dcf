//! Routing rules: overrides of the router's scoring, from the configuration or from treasury
//! (journaled), so they are domain data the journal can carry.

use serde::{Deserialize, Serialize};

use crate::amount::Amount;
use crate::asset::Asset;
use crate::ids::{MerchantId, RailId};

/// A rule override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// "merchant X only on rails Y".
    MerchantOnly { merchant: MerchantId, rails: Vec<RailId> },
    /// "above amount A of asset X only on rails Y" (amounts ≥ A).
    AmountAtLeastOnly { asset: Asset, amount: Amount, rails: Vec<RailId> },
    /// "asset X prefers rails Y, in order" (a score bonus, not a restriction).
    AssetPrefers { asset: Asset, rails: Vec<RailId> },
}

impl Rule {
    /// The rails the rule names.
    pub fn rails(&self) -> &[RailId] {
        match self {
            Rule::MerchantOnly { rails, .. }
            | Rule::AmountAtLeastOnly { rails, .. }
            | Rule::AssetPrefers { rails, .. } => rails,
        }
    }
}
