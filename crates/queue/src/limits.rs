//! Rate limits with governor's GCRA, driven by the queue's injected time rather than a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use model::Timestamp;

use crate::Hasher;
use crate::config::Limit;

type Gcra = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// The queue's time, as governor sees it: moved forward to each operation's `now`, never back.
#[derive(Clone, Debug, Default)]
pub(crate) struct InjectedClock {
    clock: FakeRelativeClock,
    ms: u64,
}

impl InjectedClock {
    pub(crate) fn set(&mut self, now: Timestamp) {
        if now.0 > self.ms {
            self.clock.advance(Duration::from_millis(now.0 - self.ms));
            self.ms = now.0;
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.ms
    }
}

fn quota(limit: Limit) -> Quota {
    let rate = NonZeroU32::new(limit.per_second).expect("limits are validated");
    let burst = NonZeroU32::new(limit.burst).expect("limits are validated");
    Quota::per_second(rate).allow_burst(burst)
}

/// One GCRA limiter per key (merchant or rail), created on first use.
pub(crate) struct Limiters<K> {
    limiters: HashMap<K, Gcra, Hasher>,
}

impl<K> std::fmt::Debug for Limiters<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").field("keys", &self.limiters.len()).finish()
    }
}

impl<K: Hash + Eq + Copy> Limiters<K> {
    pub(crate) fn new() -> Limiters<K> {
        Limiters { limiters: HashMap::default() }
    }

    /// Takes one cell for `key` if its limit allows it now; otherwise returns the first
    /// millisecond (on the injected clock) at which it would.
    pub(crate) fn take(&mut self, key: K, limit: Limit, clock: &InjectedClock) -> Result<(), Timestamp> {
        let limiter = self
            .limiters
            .entry(key)
            .or_insert_with(|| RateLimiter::direct_with_clock(quota(limit), clock.clock.clone()));
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(clock.clock.now());
            let wait_ms = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
            Timestamp(clock.now_ms().saturating_add(wait_ms.max(1)))
        })
    }

    /// Takes the cell a live call took, when its journaled op is replayed. The live call
    /// already judged whether the cell conformed (and recorded what it served); the replay
    /// only has to leave the limiter in the same state, so the outcome decides nothing here.
    pub(crate) fn retake(&mut self, key: K, limit: Limit, clock: &InjectedClock) {
        let _live_verdict_stands = self.take(key, limit, clock);
    }

    pub(crate) fn len(&self) -> usize {
        self.limiters.len()
    }
}
