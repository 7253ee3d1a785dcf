//! Circuit breakers, one per rail: closed → open after too many failures, open → half-open
//! after a cool-down, half-open → closed after enough successful probes (or back to open on a
//! failure). Fed by broadcast and observation outcomes and health probes; time is an input.

use model::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failures_to_open: u32,
    /// How long an open breaker stays open before it lets probes through.
    pub open_ms: u64,
    /// Probes allowed at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close a half-open breaker.
    pub successes_to_close: u32,
    /// Outcomes remembered for the success rate (at most 64).
    pub window: u32,
}

impl Default for BreakerConfig {
    fn default() -> BreakerConfig {
        BreakerConfig { failures_to_open: 5, open_ms: 30_000, half_open_probes: 1, successes_to_close: 3, window: 64 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakerState {
    Closed,
    Open { until: Timestamp },
    HalfOpen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Success,
    Failure,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    consecutive_failures: u32,
    probes_in_flight: u32,
    probe_successes: u32,
    /// The last `window` outcomes as bits (1 = success), newest in bit 0.
    history: u64,
    recorded: u32,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            probes_in_flight: 0,
            probe_successes: 0,
            history: 0,
            recorded: 0,
        }
    }

    /// Opens the breaker now, whatever its history: the rail is known to be down (its node did
    /// not answer when railyard started). After the cool-down it probes like any open breaker.
    pub fn trip(&mut self, now: Timestamp) {
        self.state = BreakerState::Open { until: now.saturating_add_ms(self.config.open_ms) };
        self.consecutive_failures = self.config.failures_to_open;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
    }

    /// The state at `now` (an open breaker whose cool-down ended is half-open).
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            state => state,
        }
    }

    fn settle_time(&mut self, now: Timestamp) {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen;
            self.probes_in_flight = 0;
            self.probe_successes = 0;
        }
    }

    /// Whether new work may be planned on the rail now. Half-open admits a bounded number of
    /// probes: each `true` there takes a probe slot until its outcome is recorded.
    pub fn admit(&mut self, now: Timestamp) -> bool {
        self.settle_time(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen if self.probes_in_flight < self.config.half_open_probes => {
                self.probes_in_flight += 1;
                true
            }
            BreakerState::HalfOpen => false,
        }
    }

    /// A probe `admit` let through was not sent after all (nothing to plan, or the pool
    /// could not reserve): its slot comes back. Without this a half-open breaker whose probe
    /// never happened waited for an outcome that never came, and the rail stayed half-open
    /// for ever (found by the simulator).
    pub fn cancel_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    /// Records a broadcast, observation or health-probe outcome. Returns true if this outcome
    /// opened the breaker (the caller starts failover).
    pub fn record(&mut self, outcome: Outcome, now: Timestamp) -> bool {
        self.settle_time(now);
        let window = self.config.window.clamp(1, 64);
        self.history = (self.history << 1) | u64::from(outcome == Outcome::Success);
        if window < 64 {
            self.history &= (1u64 << window) - 1;
        }
        self.recorded = (self.recorded + 1).min(window);
        let open = BreakerState::Open { until: now.saturating_add_ms(self.config.open_ms) };
        match (self.state, outcome) {
            (BreakerState::Closed, Outcome::Success) => self.consecutive_failures = 0,
            (BreakerState::Closed, Outcome::Failure) => {
                self.consecutive_failures += 1;
                if self.consecutive_failures >= self.config.failures_to_open {
                    self.state = open;
                    return true;
                }
            }
            (BreakerState::HalfOpen, Outcome::Success) => {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                self.probe_successes += 1;
                if self.probe_successes >= self.config.successes_to_close {
                    // The rail has proven itself again: the failures of the outage that
                    // opened the breaker no longer count against it (they kept its success
                    // rate so low that the router never chose it again after an outage,
                    // found by the routing-quality comparison).
                    self.state = BreakerState::Closed;
                    self.consecutive_failures = 0;
                    self.history = 0;
                    self.recorded = 0;
                }
            }
            (BreakerState::HalfOpen, Outcome::Failure) => {
                self.state = open;
                return true;
            }
            (BreakerState::Open { .. }, _) => {}
        }
        false
    }

    /// Successes per thousand over the remembered window (1000 with no history).
    pub fn success_permille(&self) -> u32 {
        if self.recorded == 0 {
            return 1000;
        }
        let mask = if self.recorded >= 64 { u64::MAX } else { (1u64 << self.recorded) - 1 };
        (self.history & mask).count_ones() * 1000 / self.recorded
    }
}
