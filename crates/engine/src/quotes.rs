//! What each rail costs now, for the router. Every quote the engine asks for a settlement
//! teaches it the rail's fee per payout; a rail that has not been quoted for
//! `quote_refresh_ms` (an idle rail, or one just started) is quoted for a reference batch, all
//! such rails at once under the rail timeout, so the router compares rails by what they cost
//! now rather than by what they cost when last used. A refresh is also a health check: its
//! outcome goes to the rail's breaker (an idle rail whose node is down is found before
//! anything is routed to it), and a half-open rail is quoted every round, so that a rail back
//! from an outage closes its breaker and wins its traffic back without waiting for payments
//! the router would not send it.

use std::sync::Arc;

use model::*;
use rails::{Batch, FeeQuote, Payout, Rail};
use router::{BreakerState, Outcome};

use crate::settling::fee_reserve;
use crate::{Engine, timed};

/// What the engine knows of a rail's fees: the fee reserved for a settlement (its last
/// quote's most, with headroom for its bumps), and the fee per payout of its last reference
/// quote, with when that was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Quoted {
    pub(crate) reserve: Amount,
    pub(crate) per_payout: Option<(Amount, Timestamp)>,
}

/// Payouts in the reference batch a refresh quotes (a typical settlement's size, at most the
/// rail's own limit).
const REFERENCE_PAYOUTS: usize = 20;

impl Engine {
    /// Learns the fee reserve from a settlement's own quote: the most a settlement costs now.
    /// Its fee per payout is not learnt from it: it depends on how many payouts that one
    /// settlement carried (a lone urgent payout carries the whole base fee), so the rail
    /// serving the most urgent traffic would look the dearest.
    pub(crate) fn learn_reserve(&mut self, rail: RailId, quote: &FeeQuote) {
        let reserve = fee_reserve(quote, self.config.anomaly.bump_budget.saturating_add(1));
        self.quotes.entry(rail).or_insert(Quoted { reserve, per_payout: None }).reserve = reserve;
    }

    /// Learns from a reference batch's quote: the fee per payout the router compares rails by
    /// (every rail quoted at the same batch size), and the reserve.
    fn learn_reference(&mut self, rail: RailId, payouts: usize, quote: &FeeQuote, now: Timestamp) {
        let per_payout = Amount::new(quote.fee_max.units().div_ceil(payouts.max(1) as u128));
        self.learn_reserve(rail, quote);
        self.quotes.get_mut(&rail).expect("just learnt").per_payout = Some((per_payout, now));
    }

    /// Quotes a reference batch on every rail whose quote is older than `quote_refresh_ms`
    /// and whose breaker is not open (its probes are settlements).
    pub(crate) async fn refresh_quotes(&mut self, now: Timestamp) {
        let every = self.config.quote_refresh_ms;
        if every == 0 {
            return;
        }
        let due: Vec<Arc<dyn Rail>> = self
            .rails
            .iter()
            .filter(|rail| {
                let id = rail.capabilities().rail;
                let taken = self.quotes.get(&id).and_then(|q| q.per_payout).map(|(_, at)| at);
                let fresh = taken.is_some_and(|at| now.saturating_since(at) < every);
                let state = self.breakers[&id].state(now);
                let open = matches!(state, BreakerState::Open { .. });
                // A half-open rail is quoted every round: its quotes are its probes.
                (!fresh || state == BreakerState::HalfOpen) && !open && !self.state.paused.contains(&id)
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return;
        }
        let timeout = self.config.rail_timeout;
        let batches: Vec<Option<Batch>> = due.iter().map(|rail| reference_batch(rail.capabilities())).collect();
        let calls = due.iter().zip(&batches).map(|(rail, batch)| async move {
            match batch {
                Some(batch) => Some(timed(timeout, rail.quote(batch)).await),
                None => None,
            }
        });
        let answers = futures::future::join_all(calls).await;
        for ((rail, batch), answer) in due.iter().zip(&batches).zip(answers) {
            let (Some(batch), Some(answer)) = (batch, answer) else { continue };
            let id = rail.capabilities().rail;
            match answer {
                Ok(quote) => {
                    self.learn_reference(id, batch.payouts.len(), &quote, now);
                    self.breakers.get_mut(&id).expect("a breaker per rail").record(Outcome::Success, now);
                }
                Err(error) => {
                    tracing::warn!(rail = %id, %error, "fee quote refresh failed");
                    self.breakers.get_mut(&id).expect("a breaker per rail").record(Outcome::Failure, now);
                }
            }
        }
    }
}

/// A batch of the rail's smallest payouts of its first asset to a fixed address, or `None`
/// when that address does not parse on the rail's network.
fn reference_batch(caps: &Capabilities) -> Option<Batch> {
    let destination = match caps.network {
        Network::Evm(_) => Address::Evm([0x01; 20]),
        // BIP 173's P2WPKH test vector, on the rail's network.
        Network::Bitcoin(net) => {
            let text = match net {
                BitcoinNetwork::Mainnet => "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                BitcoinNetwork::Regtest => "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
                BitcoinNetwork::Testnet | BitcoinNetwork::Signet => "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            };
            Address::parse(text, caps.network).ok()?
        }
    };
    let asset = *caps.assets.first()?;
    let count = caps.batch_size_max.clamp(1, REFERENCE_PAYOUTS);
    let payouts = (0..count)
        .map(|i| Payout { payment: PaymentId(i as u128), destination: destination.clone(), amount: caps.amount_min })
        .collect();
    Some(Batch { asset, payouts, within_ms: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_network_has_a_reference_batch() {
        let networks = [
            Network::Evm(ChainId(1)),
            Network::Bitcoin(BitcoinNetwork::Mainnet),
            Network::Bitcoin(BitcoinNetwork::Testnet),
            Network::Bitcoin(BitcoinNetwork::Signet),
            Network::Bitcoin(BitcoinNetwork::Regtest),
        ];
        for network in networks {
            let caps = Capabilities {
                rail: RailId::new("r").unwrap(),
                network,
                fee_asset: Asset::BTC,
                assets: vec![Asset::BTC],
                amount_min: Amount::new(546),
                amount_max: Amount::MAX,
                batch_size_max: 50,
                confirmations_final: 1,
                can_replace: true,
                finality_expected_ms: 1,
            };
            let batch = reference_batch(&caps).unwrap_or_else(|| panic!("{network}"));
            assert!(batch.payouts.iter().all(|p| p.destination.is_valid_on(network)));
        }
    }

    #[test]
    fn a_bitcoin_reserve_covers_a_sat_per_vbyte_more_for_every_replacement_and_a_child() {
        use rails::{FeeDetail, FeeQuote};
        // 1,000 vB at 2 sat/vB: four replacements at +1 sat/vB each reach 6 sat/vB, paid on
        // the size and a child's; an eighth a step would reserve only 3,204 sat.
        let quote =
            FeeQuote { fee_max: Amount::new(2_000), detail: FeeDetail::Bitcoin { sat_per_kvb: 2_000, vbytes: 1_000 } };
        assert_eq!(fee_reserve(&quote, 4), Amount::new(6 * 1_120));
        // At a high rate an eighth is the larger step: 1,000 vB at 40 sat/vB, four steps.
        let quote = FeeQuote {
            fee_max: Amount::new(40_000),
            detail: FeeDetail::Bitcoin { sat_per_kvb: 40_000, vbytes: 1_000 },
        };
        // 40,000 → 45,000 → 50,625 → 56,954 → 64,074 sat/kvB.
        assert_eq!(fee_reserve(&quote, 4), Amount::new(71_763));
        // Other rails: an eighth a step.
        let quote = FeeQuote { fee_max: Amount::new(8_000), detail: FeeDetail::Sandbox { fee: Amount::new(8_000) } };
        assert_eq!(fee_reserve(&quote, 2), Amount::new(10_125));
    }
}
