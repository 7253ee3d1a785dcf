//! `EngineState`: everything the journal determines — the payment book and the pools' ledger
//! — rebuilt by replaying events. Pools follow the settlement events: a planned settlement
//! reserves, a final one posts, a dead or released one voids.

use std::collections::BTreeMap;

use journal::Replica;
use model::{Amount, Asset, Book, ClassName, Event, RailId, SettlementId};
use router::{PoolConfig, Pools, Reserve};
use serde::{Deserialize, Serialize};

/// The configuration replay depends on: the same configuration and the same journal always
/// give the same state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    pub pools: Vec<PoolConfig>,
    /// Each rail's fee asset.
    pub fee_assets: BTreeMap<RailId, Asset>,
    /// Classes allowed to reserve below a pool's minimum.
    pub urgent: Vec<ClassName>,
}

/// A final settlement no longer on its chain: what to broadcast again, and whose payments
/// are held for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostFinality {
    pub rail: RailId,
    pub tx: model::SignedTx,
    pub payments: Vec<model::PaymentId>,
    pub since: model::Timestamp,
}

/// A notice owed to a merchant: a payment reached a terminal state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub payment: model::PaymentId,
    pub state: model::PaymentState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineState {
    pub book: Book,
    pub pools: Pools,
    /// Undelivered notices, by id, in the order they were journaled.
    pub outbox: BTreeMap<u128, Notice>,
    /// Rails an operator paused: nothing new is planned on them.
    pub paused: std::collections::BTreeSet<RailId>,
    /// Final settlements a reorg deeper than finality took off their chain, until the chain
    /// has them at final depth again (rare: bounded by how often chains break finality).
    pub lost: BTreeMap<SettlementId, LostFinality>,
    /// API keys (by the hash of their secret) and merchants' webhook endpoints.
    pub access: model::Access,
    /// Pool thresholds treasury set through the API: they win over the configuration file's.
    pub pool_thresholds: BTreeMap<(RailId, Asset), router::PoolConfig>,
    /// Class parameters and routing rules treasury set through the API.
    pub policy: crate::policy::Policy,
    /// Merchants' guards, the payouts they hold and what releases cleared.
    pub guards: model::Guards,
    #[serde(skip)]
    urgent: Vec<ClassName>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Book(#[from] model::BookError),
    #[error(transparent)]
    Pools(#[from] router::PoolError),
    #[error("settlement {0}'s finality {1}")]
    Finality(SettlementId, &'static str),
    #[error(transparent)]
    Access(#[from] model::AccessError),
    #[error("{0}")]
    Guard(String),
    #[error("settlement {0}: its legs sum past the largest amount")]
    Overflow(model::SettlementId),
}

impl EngineState {
    pub fn new(config: &StateConfig) -> Result<EngineState, router::PoolError> {
        let fee_pools: Vec<(RailId, Asset)> = config.fee_assets.iter().map(|(r, a)| (*r, *a)).collect();
        Ok(EngineState {
            book: Book::default(),
            pools: Pools::new(&config.pools, &fee_pools)?,
            outbox: BTreeMap::new(),
            paused: std::collections::BTreeSet::new(),
            lost: BTreeMap::new(),
            access: model::Access::default(),
            pool_thresholds: BTreeMap::new(),
            policy: crate::policy::Policy::default(),
            guards: model::Guards::default(),
            urgent: config.urgent.clone(),
        })
    }

    /// Applies one event to the book and the pools, all or nothing.
    pub fn apply(&mut self, event: &Event) -> Result<(), StateError> {
        match event {
            Event::SettlementPlanned { settlement, .. } => {
                // The pools first (without changing them), then the book (which checks the
                // legs and changes nothing if it refuses), then the reservation, which the
                // check made sure cannot fail: the event applies whole or not at all. The
                // pools' policy (minimums) was checked when the engine decided; applying the
                // decision checks only that the pools can hold it.
                let reserve = self.reserve_for(settlement)?;
                self.pools.can_hold(&reserve)?;
                self.book.apply(event)?;
                self.pools.reserve(&reserve).expect("checked by can_hold");
                Ok(())
            }
            Event::PoolFunded { rail, asset, amount, transfer, .. } => {
                self.pools.fund(*rail, *asset, *amount, ledger::TransferId(*transfer))?;
                Ok(())
            }
            Event::SettlementFinal { settlement, fee_paid, .. } => {
                self.book.apply(event)?;
                self.pools.post(*settlement, *fee_paid).expect("a final settlement has an open reservation");
                Ok(())
            }
            Event::SettlementDead { settlement, fee_burnt, .. } => {
                // Its own transaction was mined anyway when it reverted or its cancel went
                // through: the fee the chain charged for it is booked.
                self.book.apply(event)?;
                self.pools.void_burning(*settlement, *fee_burnt).expect("a dead settlement has an open reservation");
                Ok(())
            }
            Event::SettlementReleased { settlement, .. } => {
                self.book.apply(event)?;
                self.pools.void(*settlement).expect("a released settlement has an open reservation");
                Ok(())
            }
            Event::Notifications { notices, .. } => {
                // Terminal notices: the payments have just finished and left the book.
                for notice in notices {
                    self.outbox.insert(notice.id, Notice { payment: notice.payment, state: notice.state });
                    if notice.state.is_terminal() {
                        self.guards.cleared.remove(&notice.payment);
                        if let Some(test) = self.guards.tests.get_mut(&notice.payment) {
                            *test = Some(notice.state == model::PaymentState::Settled);
                        }
                    }
                }
                Ok(())
            }
            Event::GuardsSet { merchant, policy, .. } => {
                match policy {
                    Some(policy) => {
                        policy.validate().map_err(|e| StateError::Guard(e.to_string()))?;
                        self.guards.policies.insert(*merchant, policy.clone());
                    }
                    None => {
                        self.guards.policies.remove(merchant);
                    }
                }
                Ok(())
            }
            Event::PaymentGuarded { payment, hold, .. } => self.guard(*payment, hold),
            Event::PaymentApproved { payment, by, .. } => {
                let hold = self
                    .guards
                    .held
                    .get_mut(payment)
                    .ok_or_else(|| StateError::Guard(format!("payment {payment} is not held by guards")))?;
                if usize::from(hold.approvals_needed) <= hold.approvals.len() {
                    return Err(StateError::Guard(format!("payment {payment} needs no more approvals")));
                }
                if hold.approvals.contains(by) {
                    return Err(StateError::Guard(format!(
                        "key {by} approved payment {payment} already; a different treasury key must approve it"
                    )));
                }
                hold.approvals.push(by.clone());
                Ok(())
            }
            Event::PaymentResolved { payment, resolution, .. } => {
                self.book.apply(event)?;
                if let Some(hold) = self.guards.held.remove(payment) {
                    if *resolution == model::Resolution::Retry {
                        *self.guards.cleared.entry(*payment).or_insert(0) |= hold.kinds();
                    }
                    if let Some(test) = hold.test
                        && !self.guards.held.values().any(|h| h.test == Some(test))
                    {
                        self.guards.tests.remove(&test);
                    }
                }
                Ok(())
            }
            Event::NotificationsDelivered { ids, .. } => {
                for id in ids {
                    self.outbox.remove(id);
                }
                Ok(())
            }
            Event::FinalityLost { settlement, rail, tx, payments, at } => {
                if self.lost.contains_key(settlement) {
                    return Err(StateError::Finality(*settlement, "is already lost"));
                }
                let lost = LostFinality { rail: *rail, tx: tx.clone(), payments: payments.clone(), since: *at };
                self.lost.insert(*settlement, lost);
                Ok(())
            }
            Event::FinalityRestored { settlement, .. } => match self.lost.remove(settlement) {
                Some(_) => Ok(()),
                None => Err(StateError::Finality(*settlement, "was not lost")),
            },
            Event::RailPaused { rail, .. } => {
                self.paused.insert(*rail);
                Ok(())
            }
            Event::RailResumed { rail, .. } => {
                self.paused.remove(rail);
                Ok(())
            }
            Event::ApiKeyCreated { key, role, merchant, label, by, at } => {
                self.access.check_new(key, *role, *merchant, label)?;
                let created = model::ApiKey {
                    role: *role,
                    merchant: *merchant,
                    label: label.clone(),
                    created_by: by.clone(),
                    created_at: *at,
                    revoked_at: None,
                };
                self.access.keys.insert(*key, created);
                Ok(())
            }
            Event::ApiKeyRevoked { key, at, .. } => {
                let entry = self.access.keys.get_mut(key).ok_or(model::AccessError::UnknownKey)?;
                if entry.revoked_at.is_some() {
                    return Err(model::AccessError::AlreadyRevoked.into());
                }
                entry.revoked_at = Some(*at);
                Ok(())
            }
            Event::PoolThresholdsSet { rail, asset, min, target, max, .. } => {
                let config = router::PoolConfig { rail: *rail, asset: *asset, min: *min, target: *target, max: *max };
                // A pool the configuration no longer has keeps the record, not the thresholds
                // (replay must not stop because a rail was removed; the engine refuses the
                // command for a pool that is not configured).
                if self.pools.config(*rail, *asset).is_some() {
                    self.pools.set_thresholds(config)?;
                }
                self.pool_thresholds.insert((*rail, *asset), config);
                Ok(())
            }
            Event::ClassSet { class, weight, deadline_default_ms, age_max_ms, urgent, .. } => {
                let setting = crate::policy::ClassSetting {
                    weight: *weight,
                    deadline_default_ms: *deadline_default_ms,
                    age_max_ms: *age_max_ms,
                    urgent: *urgent,
                };
                self.policy.classes.insert(*class, setting);
                self.urgent.retain(|c| c != class);
                if *urgent {
                    self.urgent.push(*class);
                }
                Ok(())
            }
            Event::RoutingRulesSet { rules, .. } => {
                self.policy.rules = Some(rules.clone());
                Ok(())
            }
            Event::WebhookEndpointSet { merchant, url, .. } => {
                match url {
                    Some(url) => {
                        model::Access::check_url(url)?;
                        self.access.webhooks.insert(*merchant, url.clone());
                    }
                    None => {
                        self.access.webhooks.remove(merchant);
                    }
                }
                Ok(())
            }
            _ => Ok(self.book.apply(event)?),
        }
    }

    /// Records a guard hold: the payment must be held with nothing in flight (the book's
    /// `PaymentHeld` came first in the same append); a hold again replaces the last one.
    fn guard(&mut self, payment: model::PaymentId, hold: &model::GuardHold) -> Result<(), StateError> {
        let record = self.book.payments.get_mut(&payment).ok_or(model::BookError::UnknownPayment(payment))?;
        if record.state != (model::PaymentState::Held { in_flight: false }) {
            return Err(StateError::Guard(format!("payment {payment} is {}, not held", record.state)));
        }
        if hold.reasons.is_empty() {
            return Err(StateError::Guard(format!("a guard hold of payment {payment} without a reason")));
        }
        record.reason = Some(format!("held: {}", hold.describe()));
        // A hold replaced by a narrower one (a treasury key released some of its reasons):
        // what was released is not judged again before signing.
        if let Some(previous) = self.guards.held.get(&payment) {
            let released = previous.kinds() & !hold.kinds();
            if released != 0 {
                *self.guards.cleared.entry(payment).or_insert(0) |= released;
            }
        }
        if let Some(test) = hold.test {
            self.guards.tests.entry(test).or_insert(None);
        }
        self.guards.held.insert(payment, hold.clone());
        Ok(())
    }

    /// The reservation a planned settlement takes from its rail's pools.
    pub fn reserve_for(&self, settlement: &model::Settlement) -> Result<Reserve, StateError> {
        let amount = Amount::try_sum(settlement.legs.iter().map(|l| l.amount))
            .map_err(|_| StateError::Overflow(settlement.id))?;
        let urgent = settlement
            .legs
            .iter()
            .any(|l| self.book.payments.get(&l.payment).is_some_and(|p| self.urgent.contains(&p.payment.class)));
        Ok(Reserve {
            settlement: settlement.id,
            rail: settlement.rail,
            asset: settlement.asset,
            amount,
            fee_asset: settlement.fee_asset,
            fee: settlement.fee_reserved,
            urgent,
        })
    }

    /// Whether payments of `class` may use a pool's reserve below its minimum.
    pub fn is_urgent(&self, class: ClassName) -> bool {
        self.urgent.contains(&class)
    }

    /// A hash of the whole state: replaying the same journal gives the same hash.
    pub fn state_hash(&self) -> [u8; 32] {
        // Hashed as it is encoded: no buffer of the whole state.
        let hasher = postcard::to_io(self, blake3::Hasher::new()).expect("state serializes");
        *hasher.finalize().as_bytes()
    }
}

/// A snapshot's bytes, in parts (see `crate::parts`): the encoding version, then the state
/// (postcard).
pub fn encode_snapshot(state: &EngineState) -> Vec<Vec<u8>> {
    crate::parts::to_parts(&[model::event::ENCODING_VERSION], state)
}

/// Replays the journal into an `EngineState` built from the configuration.
#[derive(Debug)]
pub struct Replayed(pub EngineState);

impl Replica for Replayed {
    type Error = String;
    type Context = StateConfig;

    fn empty(config: &StateConfig) -> Self {
        Replayed(EngineState::new(config).expect("pool configuration was validated"))
    }

    fn apply(&mut self, seq: u64, payload: &[u8]) -> Result<(), String> {
        let event = Event::decode(payload).map_err(|e| format!("record {seq}: {e}"))?;
        self.0.apply(&event).map_err(|e| format!("record {seq}: {e}"))?;
        // What finished was written to the history store when these records were committed.
        self.0.book.take_retired();
        Ok(())
    }

    fn encode(&self) -> Vec<Vec<u8>> {
        encode_snapshot(&self.0)
    }

    fn decode(parts: &[Vec<u8>], config: &StateConfig) -> Result<Self, String> {
        // Snapshots carry the event encoding's version: one written by another railyard
        // version is named as such, not misread.
        let version = model::event::ENCODING_VERSION;
        match parts.first().and_then(|part| part.first()) {
            Some(&found) if found == version => {}
            Some(&found) => {
                return Err(format!(
                    "snapshot encoding version {found} is not supported (expected {version}): this journal was written by another railyard version"
                ));
            }
            None => return Err("the snapshot is empty".to_owned()),
        }
        let mut state: EngineState = crate::parts::from_parts(parts, 1).map_err(|e| e.to_string())?;
        // Today's pool configuration, not the one the snapshot was written with: the same
        // state a full replay under today's configuration gives.
        let fee_pools: Vec<(RailId, Asset)> = config.fee_assets.iter().map(|(r, a)| (*r, *a)).collect();
        state.pools.reconfigure(&config.pools, &fee_pools).map_err(|e| e.to_string())?;
        // Treasury's journaled changes win over the file, as a full replay gives (a pool the
        // file no longer configures keeps none).
        for config in state.pool_thresholds.values() {
            if state.pools.config(config.rail, config.asset).is_some() {
                state.pools.set_thresholds(*config).map_err(|e| e.to_string())?;
            }
        }
        state.urgent = state.policy.urgent(&config.urgent);
        Ok(Replayed(state))
    }
}
