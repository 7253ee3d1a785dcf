//! Work partitioned between nodes on a shared journal (issue 14): one node coordinates —
//! routing, the queue, failover, holds, reconciliation, operators' commands — and each rail is
//! driven by the one node whose lease on it is held: signing what the coordinator planned on
//! it, broadcasting, watching, replacing. An engine acts on what its `Acting` names; one with
//! none acts on everything (a node alone, or one holding every lease).
//!
//! Every node decides in its turn on the journal, after applying what the others appended, so
//! a rail's holder and the coordinator never decide from states the other has moved past: a
//! settlement the coordinator planned is signed by the rail's holder in its next turn (quoted
//! again, within the fee reserved for it) or released; one its holder never signs (the node is
//! gone and no other took the rail yet) is released by the coordinator after the anomaly
//! policy's `stuck_after_ms`, and its payments queue again. Nothing was signed for either, so
//! nothing can be paid twice.

use std::collections::BTreeSet;
use std::sync::Arc;

use model::*;
use rails::Rail;
use router::Outcome;

use crate::{Effect, Engine, EngineError, Watching, timed};

/// What a node acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acting {
    /// Routing, the queue, failover, holds, reconciliation and commands.
    pub coordinator: bool,
    /// The rails it signs, broadcasts and watches on.
    pub rails: BTreeSet<RailId>,
}

impl Engine {
    /// Whether this engine makes the coordinator's decisions.
    pub fn coordinates(&self) -> bool {
        self.acting.as_ref().is_none_or(|a| a.coordinator)
    }

    /// Whether this engine drives `rail` (signs, broadcasts and watches on it).
    pub fn drives(&self, rail: RailId) -> bool {
        self.acting.as_ref().is_none_or(|a| a.rails.contains(&rail))
    }

    /// Handles a command from the service loop. Only the coordinator takes commands; any
    /// node takes a merchant's batch.
    pub(crate) async fn handle(&mut self, command: crate::service::Command, now: Timestamp) {
        use crate::service::Command;
        self.commanding = !matches!(command, Command::Submit { .. } | Command::Outbox { .. });
        self.dispatch(command, now).await;
        self.commanding = false;
    }

    /// What this engine acts on (`None`: everything).
    pub fn acting(&self) -> Option<&Acting> {
        self.acting.as_ref()
    }

    /// Signs the settlements the coordinator planned on `rail`, each quoted again: within the
    /// fee reserved for it, signed and (after the commit) broadcast; above it, or when the rail
    /// cannot build it, released (its payments queue again). A quote that fails leaves it
    /// planned for the next round.
    pub(crate) async fn sign_planned(&mut self, rail: &Arc<dyn Rail>, now: Timestamp) -> Result<(), EngineError> {
        let caps = rail.capabilities().clone();
        if self.state.paused.contains(&caps.rail) {
            return Ok(());
        }
        let book = &self.state.book;
        let planned: Vec<SettlementId> = book
            .open_settlements()
            .iter()
            .filter(|id| {
                let record = &book.settlements[*id];
                record.settlement.rail == caps.rail && record.state == SettlementState::Planned
            })
            .copied()
            .collect();
        for id in planned {
            let settlement = self.state.book.settlements[&id].settlement.clone();
            let ids: Vec<PaymentId> = settlement.legs.iter().map(|l| l.payment).collect();
            let batch = self.batch_of(settlement.asset, &ids, now);
            let quote = match timed(self.config.rail_timeout, rail.quote(&batch)).await {
                Ok(quote) => quote,
                Err(error) => {
                    tracing::warn!(rail = %caps.rail, settlement = %id, %error, "quote failed; signed next round");
                    self.breakers.get_mut(&caps.rail).expect("a breaker per rail").record(Outcome::Failure, now);
                    continue;
                }
            };
            if quote.fee_max > settlement.fee_reserved {
                tracing::warn!(rail = %caps.rail, settlement = %id, "fees rose past what was reserved; released");
                self.stage(vec![Event::SettlementReleased { settlement: id, at: now }])?;
                continue;
            }
            match timed(self.config.rail_timeout, rail.build(&batch, &quote)).await {
                Ok(tx) => {
                    self.stage(vec![Event::SettlementSigned { settlement: id, tx: tx.clone(), at: now }])?;
                    self.watching.insert(id, Watching { last_action_at: now, ..Watching::default() });
                    self.effects.push(Effect::Broadcast { settlement: id, tx, children: Vec::new() });
                }
                Err(error) => {
                    tracing::warn!(rail = %caps.rail, settlement = %id, %error, "build failed; settlement released");
                    self.stage(vec![Event::SettlementReleased { settlement: id, at: now }])?;
                }
            }
        }
        Ok(())
    }

    /// The coordinator learns how rails other nodes drive fare from what those nodes append:
    /// a settlement released unsigned (the rail's node could not sign it, or nobody did) is a
    /// failure on its breaker, a signature a success — so repeated trouble on another node's
    /// rail opens the breaker here, and failover moves its queued payments, as it would for a
    /// rail this node drove itself. Called before the event applies.
    pub(crate) fn learn_rail_health(&mut self, event: &Event, at: Timestamp) {
        if !self.coordinates() {
            return;
        }
        let (settlement, outcome) = match event {
            Event::SettlementReleased { settlement, .. } => (settlement, Outcome::Failure),
            Event::SettlementSigned { settlement, .. } => (settlement, Outcome::Success),
            _ => return,
        };
        let Some(rail) = self.state.book.settlements.get(settlement).map(|r| r.settlement.rail) else { return };
        if self.drives(rail) {
            return; // its own calls feed it
        }
        if let Some(breaker) = self.breakers.get_mut(&rail) {
            breaker.record(outcome, at);
        }
    }

    /// The coordinator's look at what it planned on rails other nodes drive: a settlement
    /// still unsigned `stuck_after_ms` after the coordinator first saw it planned is released.
    pub(crate) fn release_unsigned(&mut self, now: Timestamp) -> Result<(), EngineError> {
        let stuck = self.config.anomaly.stuck_after_ms;
        let mut released = Vec::new();
        let open: Vec<SettlementId> = self.state.book.open_settlements().iter().copied().collect();
        for id in open {
            let record = &self.state.book.settlements[&id];
            if record.state != SettlementState::Planned || self.drives(record.settlement.rail) {
                continue;
            }
            let seen =
                self.watching.entry(id).or_insert_with(|| Watching { last_action_at: now, ..Watching::default() });
            if now.saturating_since(seen.last_action_at) >= stuck {
                tracing::warn!(settlement = %id, rail = %record.settlement.rail, "planned but never signed by the rail's node; released");
                released.push(Event::SettlementReleased { settlement: id, at: now });
            }
        }
        for event in &released {
            self.learn_rail_health(event, now);
        }
        if released.is_empty() { Ok(()) } else { self.stage(released) }
    }
}
