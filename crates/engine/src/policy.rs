//! Treasury's policy changes at run time: a priority class's parameters and the routing rules.
//! Each is journaled (`ClassSet`, `RoutingRulesSet`) with who and why, wins over the
//! configuration file from then on (after restarts and snapshots too: `Policy::apply_to` runs
//! on the file's configuration at open), and is refused with the reason when it would break a
//! running payment: an age limit that would hold payments already queued longer, rules under
//! which a queued payment would have no rail.

use std::collections::BTreeMap;

use model::*;
use router::Router;
use serde::{Deserialize, Serialize};

use crate::routing::rail_states;
use crate::{Engine, EngineConfig, EngineError};

/// What treasury set, by class, and the rules (`None`: the file's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub classes: BTreeMap<ClassName, ClassSetting>,
    pub rules: Option<Vec<Rule>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassSetting {
    pub weight: u32,
    pub deadline_default_ms: u64,
    pub age_max_ms: Option<u64>,
    pub urgent: bool,
}

impl Policy {
    /// The file's configuration with treasury's changes over it (classes the file no longer
    /// has are left out).
    pub fn apply_to(&self, config: &mut EngineConfig) {
        for class in &mut config.queue.classes {
            if let Some(setting) = self.classes.get(&class.name) {
                class.weight = setting.weight;
                class.deadline_default_ms = setting.deadline_default_ms;
                class.age_max_ms = setting.age_max_ms;
            }
        }
        config.state.urgent = self.urgent(&config.state.urgent);
        if let Some(rules) = &self.rules {
            config.rules = rules.clone();
        }
    }

    /// The urgent classes: the file's, with treasury's changes.
    pub fn urgent(&self, file: &[ClassName]) -> Vec<ClassName> {
        let mut urgent: Vec<ClassName> =
            file.iter().filter(|c| self.classes.get(c).is_none_or(|s| s.urgent)).copied().collect();
        urgent.extend(self.classes.iter().filter(|(c, s)| s.urgent && !file.contains(c)).map(|(c, _)| *c));
        urgent
    }
}

impl Engine {
    /// Changes a configured class's weight, default deadline, age limit and urgency.
    pub async fn set_class(
        &mut self,
        class: ClassName,
        setting: ClassSetting,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        let Some(index) = self.config.queue.classes.iter().position(|c| c.name == class) else {
            return Err(EngineError::Refused(format!(
                "no class {class}: classes are added or removed in the configuration file"
            )));
        };
        if let Some(age_max) = setting.age_max_ms {
            let oldest = self.staging.depths(now).classes.get(&class).map_or(0, |d| d.oldest_age_ms);
            if oldest > age_max {
                return Err(EngineError::Refused(format!(
                    "payments of class {class} have waited up to {oldest} ms; an age limit of {age_max} ms would hold them at once (raise it, or drain and retry them first)"
                )));
            }
        }
        let next = queue::ClassConfig {
            name: class,
            weight: setting.weight,
            deadline_default_ms: setting.deadline_default_ms,
            age_max_ms: setting.age_max_ms,
        };
        self.staging.set_class(next.clone()).map_err(|e| EngineError::Refused(format!("{}: {}", e.key, e.problem)))?;
        let (by, reason) = (by.to_owned(), reason.to_owned());
        let ClassSetting { weight, deadline_default_ms, age_max_ms, urgent } = setting;
        let event = Event::ClassSet { class, weight, deadline_default_ms, age_max_ms, urgent, by, reason, at: now };
        self.stage_input(event)?;
        self.config.queue.classes[index] = next;
        self.config.state.urgent.retain(|c| *c != class);
        if urgent {
            self.config.state.urgent.push(class);
        }
        self.policy_version += 1;
        self.commit_and_act(now).await
    }

    /// Replaces the routing rules. Payments already in a rail's queue stay there; the rules
    /// decide where payments go from now on.
    pub async fn set_rules(
        &mut self,
        rules: Vec<Rule>,
        by: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<(), EngineError> {
        self.running()?;
        for (index, rule) in rules.iter().enumerate() {
            if let Some(rail) = rule.rails().iter().find(|r| self.rail(**r).is_none()) {
                return Err(EngineError::Refused(format!("rule {index} names rail {rail}, which is not configured")));
            }
        }
        let router =
            Router::new(self.config.weights, rules.clone()).map_err(|e| EngineError::Refused(e.to_string()))?;
        // A queued payment some rail can take now must still have one under the new rules.
        let states = rail_states(&self.rails, &self.breakers, &self.state.paused, &self.quotes, now);
        let state = &self.state;
        let mut stranded = Vec::new();
        for record in state.book.payments.values().filter(|r| r.state == PaymentState::Queued) {
            let urgent = state.is_urgent(record.payment.class);
            let spendable = |r: RailId, a: Asset| state.pools.spendable(r, a, urgent);
            let deadline = record.payment.deadline.unwrap_or(now);
            let before = self.router.decide(&record.payment, deadline, &states, &spendable, now).chosen;
            if before.is_some() && router.decide(&record.payment, deadline, &states, &spendable, now).chosen.is_none() {
                stranded.push(record.payment.id);
            }
        }
        if let Some(first) = stranded.first() {
            return Err(EngineError::Refused(format!(
                "{} queued payment(s) (first {first}) would have no rail under these rules; change the rules or let them settle first",
                stranded.len()
            )));
        }
        let (by, reason) = (by.to_owned(), reason.to_owned());
        self.stage_input(Event::RoutingRulesSet { rules: rules.clone(), by, reason, at: now })?;
        self.router = router;
        self.config.rules = rules;
        self.policy_version += 1;
        self.commit_and_act(now).await
    }
}
