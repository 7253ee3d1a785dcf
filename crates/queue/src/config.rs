//! Queue configuration: priority classes, capacity bounds and rate limits, validated as a
//! whole with an error naming the exact bad key.

use std::collections::BTreeMap;

use model::{ClassName, MerchantId, RailId};
use serde::{Deserialize, Serialize};

pub const CLASSES_MAX: usize = 16;
pub const WEIGHT_MAX: u32 = 1000;

/// A priority class, as treasury staff configure it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassConfig {
    pub name: ClassName,
    /// Share of dequeues while every class is backlogged (1 to 1000).
    pub weight: u32,
    /// Deadline given to a payment that has none: enqueue time plus this.
    pub deadline_default_ms: u64,
    /// A payment queued longer than this is reported by `Queue::stale` (the engine holds it
    /// for the operator). `None`: no limit.
    pub age_max_ms: Option<u64>,
}

/// A GCRA limit: a sustained rate and a burst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// In dequeue-tie order: on equal standing, the earlier class wins.
    pub classes: Vec<ClassConfig>,
    /// Most payments queued in all.
    pub capacity: usize,
    /// Most payments queued for one merchant.
    pub capacity_per_merchant: usize,
    pub merchant_limit: Limit,
    pub merchant_limits: BTreeMap<MerchantId, Limit>,
    pub rail_limit: Limit,
    pub rail_limits: BTreeMap<RailId, Limit>,
    /// Most queued payments one dequeue looks at (skipping rate-limited merchants and payments
    /// the caller's predicate refuses): bounds the work of a single call.
    pub scan_max: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("queue config: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

impl QueueConfig {
    /// The four classes railyard ships with.
    pub fn example() -> QueueConfig {
        let class = |name: &str, weight, deadline_default_ms, age_max_ms| ClassConfig {
            name: ClassName::new(name).expect("valid class name"),
            weight,
            deadline_default_ms,
            age_max_ms,
        };
        QueueConfig {
            classes: vec![
                class("urgent", 8, 60_000, Some(300_000)),
                class("payroll", 4, 3_600_000, Some(6 * 3_600_000)),
                class("standard", 2, 4 * 3_600_000, Some(24 * 3_600_000)),
                class("bulk", 1, 24 * 3_600_000, None),
            ],
            capacity: 1_000_000,
            capacity_per_merchant: 100_000,
            merchant_limit: Limit { per_second: 100, burst: 200 },
            merchant_limits: BTreeMap::new(),
            rail_limit: Limit { per_second: 500, burst: 1000 },
            rail_limits: BTreeMap::new(),
            scan_max: 10_000,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let error = |key: String, problem: &str| Err(ConfigError { key, problem: problem.to_owned() });
        if self.classes.is_empty() || self.classes.len() > CLASSES_MAX {
            return error("classes".into(), "between 1 and 16 classes are required");
        }
        for (i, class) in self.classes.iter().enumerate() {
            let key = |field: &str| format!("classes[{i}].{field}");
            if self.classes[..i].iter().any(|c| c.name == class.name) {
                return error(key("name"), "names a class twice");
            }
            if class.weight == 0 || class.weight > WEIGHT_MAX {
                return error(key("weight"), "must be 1 to 1000");
            }
            if class.deadline_default_ms == 0 {
                return error(key("deadline_default_ms"), "must be greater than zero");
            }
            if class.age_max_ms == Some(0) {
                return error(key("age_max_ms"), "must be greater than zero when set");
            }
        }
        if self.capacity == 0 {
            return error("capacity".into(), "must be greater than zero");
        }
        if self.capacity_per_merchant == 0 || self.capacity_per_merchant > self.capacity {
            return error("capacity_per_merchant".into(), "must be 1 to capacity");
        }
        if self.scan_max == 0 {
            return error("scan_max".into(), "must be greater than zero");
        }
        let limits = [("merchant_limit".to_owned(), self.merchant_limit), ("rail_limit".to_owned(), self.rail_limit)]
            .into_iter()
            .chain(self.merchant_limits.iter().map(|(m, l)| (format!("merchant_limits.{}", m.0), *l)))
            .chain(self.rail_limits.iter().map(|(r, l)| (format!("rail_limits.{r}"), *l)));
        for (key, limit) in limits {
            if limit.per_second == 0 || limit.burst == 0 {
                return error(key, "per_second and burst must be greater than zero");
            }
        }
        Ok(())
    }
}
