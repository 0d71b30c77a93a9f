//! A per-upstream circuit breaker: closed → open on consecutive failures or a failure ratio
//! over a sliding window; open → half-open after `open_seconds`; half-open lets a few probes
//! through, and their outcome closes or re-opens the circuit.
//!
//! The closed-state check is one atomic load, so the breaker costs nothing measurable on the
//! hot path; transitions are compare-and-swap on the state word.

use crate::config::CircuitBreakerConfig;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// The breaker's state, as exported in `/status` and metrics (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed = 0,
    /// A few probes flow; the rest fail fast.
    HalfOpen = 1,
    /// Everything fails fast.
    Open = 2,
}

impl BreakerState {
    /// Lower-case name for JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            1 => BreakerState::HalfOpen,
            2 => BreakerState::Open,
            _ => BreakerState::Closed,
        }
    }
}

/// The breaker's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Proceed normally.
    Allowed,
    /// Proceed as a half-open probe; its outcome decides the circuit.
    Probe,
    /// Fail fast; retry after this many seconds.
    Rejected {
        /// Seconds until the breaker will let probes through.
        retry_after_secs: u64,
    },
}

struct Bucket {
    second: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

/// The circuit breaker of one upstream.
pub struct CircuitBreaker {
    failure_threshold: u32,
    failure_rate: f64,
    minimum_requests: u32,
    open_us: u64,
    half_open_requests: u32,
    failure_statuses: Vec<u16>,
    state: AtomicU8,
    consecutive: AtomicU32,
    open_until: AtomicU64,
    probes: AtomicU32,
    transitions: AtomicU64,
    window: Box<[Bucket]>,
}

impl CircuitBreaker {
    /// A closed breaker with the given settings.
    pub fn new(cfg: &CircuitBreakerConfig) -> CircuitBreaker {
        let window = (0..cfg.window_seconds.max(1))
            .map(|_| Bucket {
                second: AtomicU64::new(u64::MAX),
                total: AtomicU32::new(0),
                failures: AtomicU32::new(0),
            })
            .collect();
        CircuitBreaker {
            failure_threshold: cfg.failure_threshold,
            failure_rate: cfg.failure_rate,
            minimum_requests: cfg.minimum_requests,
            open_us: (cfg.open_seconds * 1_000_000.0) as u64,
            half_open_requests: cfg.half_open_requests.max(1),
            failure_statuses: cfg.failure_statuses.clone(),
            state: AtomicU8::new(BreakerState::Closed as u8),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            transitions: AtomicU64::new(0),
            window,
        }
    }

    /// Whether an upstream status counts as a failure.
    pub fn is_failure_status(&self, status: u16) -> bool {
        self.failure_statuses.contains(&status)
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// How many state changes have happened.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Whether a request admitted at `now_us` would be a half-open probe (or refused): the
    /// circuit is half-open, or open and due to probe. Closed is the fast path (one load).
    pub fn probing(&self, now_us: u64) -> bool {
        match self.state() {
            BreakerState::Closed => false,
            BreakerState::HalfOpen => true,
            BreakerState::Open => now_us >= self.open_until.load(Ordering::Acquire),
        }
    }

    /// Decides whether a request may go upstream at time `now_us`.
    pub fn admit(&self, now_us: u64) -> Admission {
        loop {
            match self.state() {
                BreakerState::Closed => return Admission::Allowed,
                BreakerState::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now_us < until {
                        return Admission::Rejected {
                            retry_after_secs: (until - now_us).div_ceil(1_000_000).max(1),
                        };
                    }
                    if self.transition(BreakerState::Open, BreakerState::HalfOpen) {
                        self.probes.store(0, Ordering::Release);
                        log::warn!("circuit breaker half-open: probing");
                    }
                }
                BreakerState::HalfOpen => {
                    if self.probes.fetch_add(1, Ordering::AcqRel) < self.half_open_requests {
                        return Admission::Probe;
                    }
                    self.probes.fetch_sub(1, Ordering::AcqRel);
                    return Admission::Rejected {
                        retry_after_secs: 1,
                    };
                }
            }
        }
    }

    /// Records the outcome of a request admitted as `admission`.
    pub fn record(&self, admission: Admission, failed: bool, now_us: u64) {
        match admission {
            Admission::Probe => {
                self.probes.fetch_sub(1, Ordering::AcqRel);
                if failed {
                    self.trip(BreakerState::HalfOpen, now_us);
                } else if self.transition(BreakerState::HalfOpen, BreakerState::Closed) {
                    self.consecutive.store(0, Ordering::Release);
                    self.clear_window();
                    log::warn!("circuit breaker closed");
                }
            }
            Admission::Allowed => {
                // Results of requests admitted before the circuit opened change nothing.
                if self.state() != BreakerState::Closed {
                    return;
                }
                let (total, failures) = self.count(failed, now_us);
                if !failed {
                    self.consecutive.store(0, Ordering::Release);
                    return;
                }
                let run = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                let by_run = self.failure_threshold > 0 && run >= self.failure_threshold;
                let by_rate = self.failure_rate > 0.0
                    && total >= self.minimum_requests.max(1)
                    && failures as f64 >= self.failure_rate * total as f64;
                if by_run || by_rate {
                    self.trip(BreakerState::Closed, now_us);
                }
            }
            Admission::Rejected { .. } => {}
        }
    }

    /// Gives back a probe slot whose request ended without an upstream outcome.
    pub fn abandon_probe(&self) {
        self.probes.fetch_sub(1, Ordering::AcqRel);
    }

    fn trip(&self, from: BreakerState, now_us: u64) {
        self.open_until
            .store(now_us + self.open_us, Ordering::Release);
        if self.transition(from, BreakerState::Open) {
            self.consecutive.store(0, Ordering::Release);
            log::warn!("circuit breaker opened");
        }
    }

    fn transition(&self, from: BreakerState, to: BreakerState) -> bool {
        let ok = self
            .state
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.transitions.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Adds one outcome to the current one-second bucket; returns the window's totals.
    fn count(&self, failed: bool, now_us: u64) -> (u32, u32) {
        let second = now_us / 1_000_000;
        let n = self.window.len() as u64;
        let b = &self.window[(second % n) as usize];
        let seen = b.second.load(Ordering::Acquire);
        if seen != second
            && b.second
                .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.total.store(0, Ordering::Release);
            b.failures.store(0, Ordering::Release);
        }
        b.total.fetch_add(1, Ordering::AcqRel);
        if failed {
            b.failures.fetch_add(1, Ordering::AcqRel);
        }
        self.window
            .iter()
            .filter(|b| {
                let s = b.second.load(Ordering::Acquire);
                s != u64::MAX && s + n > second
            })
            .fold((0, 0), |(t, f), b| {
                (
                    t + b.total.load(Ordering::Acquire),
                    f + b.failures.load(Ordering::Acquire),
                )
            })
    }

    fn clear_window(&self) {
        for b in self.window.iter() {
            b.second.store(u64::MAX, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: u32, rate: f64) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: threshold,
            failure_rate: rate,
            minimum_requests: 4,
            window_seconds: 10,
            open_seconds: 1.0,
            half_open_requests: 1,
            failure_statuses: vec![502, 503, 504],
        }
    }

    #[test]
    fn full_cycle() {
        let b = CircuitBreaker::new(&cfg(3, 0.0));
        let t = 10_000_000;
        for _ in 0..3 {
            assert_eq!(b.admit(t), Admission::Allowed);
            b.record(Admission::Allowed, true, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(t + 1), Admission::Rejected { .. }));
        // After open_seconds: one probe, the next is rejected.
        assert_eq!(b.admit(t + 1_000_001), Admission::Probe);
        assert!(matches!(b.admit(t + 1_000_002), Admission::Rejected { .. }));
        b.record(Admission::Probe, true, t + 1_000_003);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(t + 2_100_000), Admission::Probe);
        b.record(Admission::Probe, false, t + 2_100_001);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.transitions(), 5);
    }

    #[test]
    fn opens_on_failure_rate() {
        let b = CircuitBreaker::new(&cfg(0, 0.5));
        let t = 50_000_000;
        b.record(Admission::Allowed, false, t);
        b.record(Admission::Allowed, true, t);
        b.record(Admission::Allowed, false, t);
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(Admission::Allowed, true, t);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
