//! Reconciliation: what the journal says was settled against what the chains say. It reports
//! differences and changes nothing. It is incremental and bounded: a run checks the
//! settlements finished since the last run, then a rolling window over the history store, at
//! most `reconcile_settlements_max` in all. The timer runs it as a task beside the engine (its
//! result is collected by a later tick), so it never holds up a tick.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use journal::Journal;
use model::*;
use rails::{Rail, Watch};

use crate::history::{self, SETTLEMENT, decode, destination_key};
use crate::{Effect, Engine, EngineError, timed};

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
    /// Settlements checked that agree with their chain.
    pub clean: Vec<SettlementId>,
    pub destinations_checked: usize,
    pub differences: Vec<Difference>,
}

impl Engine {
    /// Runs one reconciliation now and waits for it (the timer runs the same check as a task).
    pub async fn reconcile(&mut self, now: Timestamp) -> Result<Reconciliation, EngineError> {
        self.running()?;
        self.commit().await?;
        let records = self.reconcile_records()?;
        let report = check(
            self.rails.clone(),
            self.journal.clone(),
            records,
            self.config.rail_timeout,
            self.config.reconcile_balances,
        )
        .await?;
        self.note(&report);
        self.act_on_finality(&report, now)?;
        self.commit_and_act(now).await?;
        Ok(report)
    }

    /// Starts a run on the timer, or collects the one that finished.
    pub(crate) fn reconcile_on_timer(&mut self, now: Timestamp) -> Result<(), EngineError> {
        if let Some(task) = self.reconciling.take_if(|task| task.is_finished()) {
            match futures::FutureExt::now_or_never(task) {
                Some(Ok(Ok(report))) => {
                    self.note(&report);
                    self.act_on_finality(&report, now)?;
                    self.last_reconciliation = Some(report);
                }
                Some(Ok(Err(error))) => tracing::warn!(%error, "reconciliation failed"),
                Some(Err(error)) => tracing::warn!(%error, "reconciliation task ended abnormally"),
                None => {}
            }
        }
        let interval = self.config.reconcile_interval_ms;
        if interval == 0 || now < self.next_reconcile || self.reconciling.is_some() {
            return Ok(());
        }
        self.next_reconcile = now.saturating_add_ms(interval);
        let records = self.reconcile_records()?;
        let task = check(
            self.rails.clone(),
            self.journal.clone(),
            records,
            self.config.rail_timeout,
            self.config.reconcile_balances,
        );
        self.reconciling = Some(tokio::spawn(task));
        Ok(())
    }

    /// The settlements the next run checks: those finished since the last run, then the
    /// rolling window, without repeats, at most `reconcile_settlements_max`.
    fn reconcile_records(&mut self) -> Result<Vec<SettlementRecord>, EngineError> {
        let max = self.config.reconcile_settlements_max;
        // Settlements whose finality was lost are checked on every run, until it is back.
        let lost: Vec<SettlementId> = self.state.lost.keys().copied().collect();
        let due: Vec<Vec<u8>> =
            lost.into_iter().chain(self.reconcile_due.drain(..)).map(|id| history::key(SETTLEMENT, id.0)).collect();
        let mut seen = BTreeSet::new();
        let mut records = Vec::new();
        for bytes in self.journal.history_many(&due)?.into_iter().flatten() {
            let record: SettlementRecord = decode(&bytes)?;
            if seen.insert(record.settlement.id) {
                records.push(record);
            }
        }
        let room = max.saturating_sub(records.len());
        let window = self.journal.history_scan(&[SETTLEMENT], self.reconcile_cursor.as_deref(), room)?;
        // At the end of the history the window starts again from the beginning next run.
        self.reconcile_cursor = if window.len() < room { None } else { window.last().map(|(key, _)| key.clone()) };
        for (_, bytes) in window {
            let record: SettlementRecord = decode(&bytes)?;
            if seen.insert(record.settlement.id) {
                records.push(record);
            }
        }
        Ok(records)
    }
}

impl Engine {
    /// Acts on what a run found of final settlements (issue 10, scenario 7). One no longer on
    /// its chain at final depth lost its finality to a reorg deeper than the rail's: its
    /// payments are held with the reason and their merchants told (journaled), and its bytes
    /// are sent again (the same nonce or inputs: it can pay at most once), on every run until
    /// the chain has it at final depth again; then its payments are settled again, and told.
    fn act_on_finality(&mut self, report: &Reconciliation, now: Timestamp) -> Result<(), EngineError> {
        let mut events = Vec::new();
        for difference in &report.differences {
            let Difference::FinalNotOnChain { settlement, observed } = difference else { continue };
            if let Some(lost) = self.state.lost.get(settlement) {
                let (rail, tx) = (lost.rail, lost.tx.clone());
                self.effects.push(Effect::Rebroadcast { rail, settlement: *settlement, tx });
                continue;
            }
            let Some(record) = self.settlement(*settlement)? else { continue };
            // Every paying version pays the same legs with the same nonce or inputs; the last
            // one offers the most fee, so it is the likeliest to be mined again.
            let paying = record.txs.iter().rev().find(|t| !record.cancels.contains(&t.txid));
            let Some(tx) = paying.cloned() else { continue };
            let rail = record.settlement.rail;
            tracing::error!(
                %settlement, %rail, ?observed,
                "a final settlement is off its chain (a reorg deeper than finality): its payments are held and it is sent again"
            );
            let payments: Vec<PaymentId> = record.settlement.legs.iter().map(|l| l.payment).collect();
            self.effects.push(Effect::Rebroadcast { rail, settlement: *settlement, tx: tx.clone() });
            events.push(Event::FinalityLost { settlement: *settlement, rail, tx, payments, at: now });
        }
        for settlement in &report.clean {
            if self.state.lost.contains_key(settlement) {
                tracing::info!(%settlement, "a settlement whose finality was lost is final again");
                events.push(Event::FinalityRestored { settlement: *settlement, at: now });
            }
        }
        if events.is_empty() { Ok(()) } else { self.stage(events) }
    }

    /// The final settlements a deep reorg took off their chains, and what railyard does about
    /// each (its payments are held until it is back at final depth).
    pub fn finality_lost(&self) -> &std::collections::BTreeMap<SettlementId, crate::state::LostFinality> {
        &self.state.lost
    }
}

/// Flagged settlements kept at most (the oldest go first).
const FLAGGED_MAX: usize = 10_000;

impl Engine {
    /// Logs, counts and flags a run's differences on the settlements (and so the payments)
    /// they concern; a settlement checked clean loses its flag.
    fn note(&mut self, report: &Reconciliation) {
        self.flagged_version += 1;
        for id in &report.clean {
            self.flagged.remove(id);
        }
        for difference in &report.differences {
            tracing::warn!(?difference, "reconciliation difference");
            self.differences_found += 1;
            if let Difference::FinalNotOnChain { settlement, .. } | Difference::DeadButPaid { settlement, .. } =
                difference
            {
                if self.flagged.len() >= FLAGGED_MAX {
                    self.flagged.pop_first();
                }
                self.flagged.insert(*settlement, difference.clone());
            }
        }
        log(report);
    }

    /// What the last check of `settlement` found wrong with it, if anything.
    pub fn flagged(&self, settlement: SettlementId) -> Option<&Difference> {
        self.flagged.get(&settlement)
    }

    /// Differences found since the engine opened.
    pub fn differences_found(&self) -> u64 {
        self.differences_found
    }
}

fn log(report: &Reconciliation) {
    tracing::info!(
        settlements = report.settlements_checked,
        destinations = report.destinations_checked,
        differences = report.differences.len(),
        "reconciliation done"
    );
}

/// Compares finished settlements with the chains: a final one must still be confirmed at final
/// depth, a dead one must have no paying version confirmed, and (with `balances`) every
/// destination paid must hold at least what railyard settled to it over all history.
async fn check(
    rails: Vec<Arc<dyn Rail>>,
    journal: Journal,
    records: Vec<SettlementRecord>,
    timeout: Duration,
    balances: bool,
) -> Result<Reconciliation, EngineError> {
    let mut report = Reconciliation::default();
    let mut destinations: BTreeSet<(RailId, Asset, Address)> = BTreeSet::new();
    let rail_of = |id: RailId| rails.iter().find(|r| r.capabilities().rail == id).cloned();
    for record in records {
        let is_final = match record.state {
            SettlementState::Final => true,
            SettlementState::Dead => false,
            _ => continue,
        };
        let settlement = &record.settlement;
        // A rail removed from the configuration cannot be asked.
        let Some(rail) = rail_of(settlement.rail) else { continue };
        let watch = Watch { versions: record.txs.clone(), seen_in_block: None, children: record.children.clone() };
        report.settlements_checked += 1;
        let observed = match timed(timeout, rail.observe(&watch)).await {
            Ok(observed) => observed,
            Err(error) => {
                report.differences.push(Difference::Unreachable { rail: settlement.rail, error: error.to_string() });
                continue;
            }
        };
        let paying = |txid: &[u8; 32]| !record.cancels.contains(txid);
        let confirmed_paying = matches!(&observed, Observation::Confirmed { txid, .. } if paying(txid));
        let final_depth = u64::from(rail.capabilities().confirmations_final);
        let deep = matches!(&observed, Observation::Confirmed { depth, .. } if *depth >= final_depth);
        let agrees = if is_final { confirmed_paying && deep } else { !confirmed_paying };
        if agrees {
            report.clean.push(settlement.id);
        }
        if is_final {
            if !agrees {
                report.differences.push(Difference::FinalNotOnChain { settlement: settlement.id, observed });
            }
            for leg in settlement.legs.iter().filter(|_| balances) {
                destinations.insert((settlement.rail, settlement.asset, leg.destination.clone()));
            }
        } else if confirmed_paying {
            report.differences.push(Difference::DeadButPaid { settlement: settlement.id, observed });
        }
    }
    let mut by_rail: BTreeMap<RailId, Vec<(Asset, Address)>> = BTreeMap::new();
    for (rail, asset, destination) in destinations {
        by_rail.entry(rail).or_default().push((asset, destination));
    }
    for (rail_id, wanted) in by_rail {
        let rail = rail_of(rail_id).expect("checked above");
        for (asset, destination) in wanted {
            let expected = Amount::new(journal.history_counter(&destination_key(rail_id, asset, &destination))?);
            report.destinations_checked += 1;
            match timed(timeout, rail.balance_of(&destination, asset)).await {
                Ok(held) if held < expected => {
                    let shortfall = Difference::Shortfall { rail: rail_id, destination, asset, expected, held };
                    report.differences.push(shortfall);
                }
                Ok(_) => {}
                Err(error) => {
                    report.differences.push(Difference::Unreachable { rail: rail_id, error: error.to_string() })
                }
            }
        }
    }
    Ok(report)
}
