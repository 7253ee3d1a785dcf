//! Reconciliation: what the journal says was settled against what the chains say. It reports
//! differences and changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use model::*;
use rails::Watch;

use crate::{Engine, EngineError, timed};

/// One disagreement between the journal and a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Settled in the journal, but its transaction is not on chain at final depth now.
    FinalNotOnChain {
        settlement: SettlementId,
        observed: Observation,
    },
    /// Dead in the journal (reissued), yet a paying version is confirmed: a double payment.
    DeadButPaid {
        settlement: SettlementId,
        observed: Observation,
    },
    /// A destination holds less than railyard settled to it.
    Shortfall {
        rail: RailId,
        destination: Address,
        asset: Asset,
        expected: Amount,
        held: Amount,
    },
    Unreachable {
        rail: RailId,
        error: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub settlements_checked: usize,
    pub destinations_checked: usize,
    pub differences: Vec<Difference>,
}

impl Engine {
    /// Compares what the journal says was settled with what the chains say: every final
    /// settlement's transaction must still be on chain at final depth, no dead settlement may
    /// have a paying version confirmed, and every destination must hold at least what railyard
    /// settled to it (exactly, on chains where nobody else pays it). Reports every difference;
    /// changes nothing.
    pub async fn reconcile(&mut self) -> Result<Reconciliation, EngineError> {
        self.running()?;
        let mut report = Reconciliation::default();
        let mut owed: BTreeMap<(RailId, Address, Asset), Amount> = BTreeMap::new();
        for (id, record) in &self.state.book.settlements {
            let paying = |txid: &[u8; 32]| !record.cancels.contains(txid);
            let final_tx = match record.state {
                SettlementState::Final => Some(()),
                SettlementState::Dead => None,
                _ => continue,
            };
            let rail = self.rail_of(*id);
            let watch = Watch { versions: record.txs.clone(), seen_in_block: None };
            report.settlements_checked += 1;
            let observed = match timed(self.config.rail_timeout, rail.observe(&watch)).await {
                Ok(observed) => observed,
                Err(error) => {
                    report
                        .differences
                        .push(Difference::Unreachable { rail: record.settlement.rail, error: error.to_string() });
                    continue;
                }
            };
            let confirmed_paying = matches!(&observed, Observation::Confirmed { txid, .. } if paying(txid));
            let deep = matches!(&observed, Observation::Confirmed { depth, .. } if *depth >= u64::from(rail.capabilities().confirmations_final));
            if final_tx.is_some() {
                if !(confirmed_paying && deep) {
                    report.differences.push(Difference::FinalNotOnChain { settlement: *id, observed });
                }
                for leg in &record.settlement.legs {
                    let key = (record.settlement.rail, leg.destination.clone(), record.settlement.asset);
                    let entry = owed.entry(key).or_insert(Amount::ZERO);
                    *entry = entry.checked_add(leg.amount).unwrap_or(Amount::MAX);
                }
            } else if confirmed_paying {
                report.differences.push(Difference::DeadButPaid { settlement: *id, observed });
            }
        }
        for ((rail_id, destination, asset), expected) in owed {
            let rail =
                Arc::clone(self.rails.iter().find(|r| r.capabilities().rail == rail_id).expect("configured rail"));
            report.destinations_checked += 1;
            match timed(self.config.rail_timeout, rail.balance_of(&destination, asset)).await {
                Ok(held) if held < expected => {
                    report.differences.push(Difference::Shortfall {
                        rail: rail_id,
                        destination,
                        asset,
                        expected,
                        held,
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    report.differences.push(Difference::Unreachable { rail: rail_id, error: error.to_string() })
                }
            }
        }
        for difference in &report.differences {
            tracing::warn!(?difference, "reconciliation difference");
        }
        Ok(report)
    }
}
