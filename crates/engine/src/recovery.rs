//! Recovery after a restart: rails learn the spends the journal says railyard signed, signed
//! settlements go out again with the same bytes, and planned-but-unsigned ones are released.

use model::*;

use crate::{Effect, Engine, EngineError, Watching};

impl Engine {
    /// Resumes after a restart: tells each rail what was signed on it (so no nonce or input is
    /// reused), re-broadcasts what was signed but maybe never sent (the same bytes), and
    /// releases settlements that were planned but never signed (their payments queue again).
    pub(crate) async fn resume(&mut self, now: Timestamp) -> Result<(), EngineError> {
        self.probe_rails(now).await;
        let open: Vec<SettlementId> = self.state.book.open_settlements().iter().copied().collect();
        // Spends of settlements that are no longer open are spent on chain or provably dead;
        // a rail learns them from its own chain. Open ones may not be on chain yet.
        for rail in self.rails.clone() {
            let caps = rail.capabilities();
            if !self.drives(caps.rail) {
                continue; // its node tells it
            }
            let spends: Vec<Spend> = open
                .iter()
                .map(|id| &self.state.book.settlements[id])
                .filter(|r| r.settlement.rail == caps.rail)
                .flat_map(|r| r.txs.iter().chain(&r.children).map(|t| t.spend.clone()))
                .collect();
            rail.recover_spends(&spends)
                .map_err(|e| EngineError::Config(format!("rail {}: cannot recover its spends: {e}", caps.rail)))?;
        }
        let mut released = Vec::new();
        for id in open {
            let record = &self.state.book.settlements[&id];
            let rail = record.settlement.rail;
            if self.rail(rail).is_none() {
                // The rail left the configuration while this settlement was open. If it was
                // signed it may still confirm, so nothing of it may be reissued: its payments
                // are held until the rail is configured again or an operator resolves them.
                if record.state != SettlementState::Planned {
                    let reason = format!(
                        "rail {rail} is not configured any more, and settlement {id} on it may still confirm: configure the rail again to finish it, or resolve the payment"
                    );
                    tracing::warn!(settlement = %id, %rail, "open settlement on a rail no longer configured: held");
                    let book = &self.state.book;
                    let held = |p: &PaymentId| {
                        book.payments.get(p).is_some_and(|r| matches!(r.state, PaymentState::Held { .. }))
                    };
                    released.extend(
                        record.settlement.legs.iter().filter(|l| !held(&l.payment)).map(|l| Event::PaymentHeld {
                            payment: l.payment,
                            reason: reason.clone(),
                            at: now,
                        }),
                    );
                    continue;
                }
            }
            if !self.drives(rail) {
                continue; // the rail's node recovers it (or the coordinator releases it unsigned)
            }
            match record.state {
                // Planned and never signed: released, so its payments queue again — by the
                // coordinator; a node driving only the rail signs it in its next round.
                SettlementState::Planned if self.coordinates() => {
                    released.push(Event::SettlementReleased { settlement: id, at: now });
                }
                SettlementState::Signed => {
                    let tx = record.txs.last().expect("signed settlements have a transaction").clone();
                    self.watching.insert(id, Watching { last_action_at: now, ..Watching::default() });
                    self.effects.push(Effect::Broadcast { settlement: id, tx, children: Vec::new() });
                }
                _ => {}
            }
        }
        if !released.is_empty() {
            self.stage(released)?;
        }
        self.commit_and_act(now).await
    }
}

impl Engine {
    /// Asks every rail's node whether it is up (concurrently, under the rail timeout). A rail
    /// whose node is down starts with its breaker open, so nothing is planned on it until it
    /// answers probes again; the other rails serve meanwhile.
    async fn probe_rails(&mut self, now: Timestamp) {
        let timeout = self.config.rail_timeout;
        let probes = self.rails.iter().map(|rail| async move {
            match tokio::time::timeout(timeout, rail.health()).await {
                Ok(rails::Health::Up { .. }) => true,
                Ok(rails::Health::Down) | Err(_) => false,
            }
        });
        let up = futures::future::join_all(probes).await;
        for (rail, up) in self.rails.clone().iter().zip(up) {
            if !up {
                let id = rail.capabilities().rail;
                tracing::warn!(rail = %id, "node down at start: the rail starts with its breaker open");
                self.breakers.get_mut(&id).expect("a breaker per rail").trip(now);
            }
        }
    }
}
