//! Per-key rate limiting: GCRA (a token bucket in one timestamp) in a fixed-size, lock-free table.
//!
//! Each key owns one `AtomicU64` slot holding a 20-bit key fingerprint and its 44-bit
//! "theoretical arrival time" (TAT) in microseconds since the process epoch. A request is
//! admitted when `TAT - now <= burst * interval`; admitting moves TAT forward by one interval.
//! This honours both `requests_per_second` (the interval) and `burst` (the tolerance) exactly.
//!
//! Memory is fixed by the slot count, whatever the number of keys. A key probes two slots:
//! its own, an idle one (TAT in the past, so resetting it loses nothing), or, when both are
//! busy with other keys, it shares the less loaded one. Sharing can only over-limit, never
//! under-limit, the same trade pingora-limits' count-min estimator makes.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TAT_BITS: u32 = 44;
const TAT_MASK: u64 = (1 << TAT_BITS) - 1;

/// The outcome of one rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Requests that could still be admitted right now.
    pub remaining: u64,
    /// Seconds until the full allowance is available again.
    pub reset_secs: u64,
    /// Seconds until the next request would be admitted (0 when allowed).
    pub retry_after_secs: u64,
}

/// The [`Decision`] for a bucket whose TAT lies `backlog_us` ahead of now; shared with the
/// cluster limiter, so both scopes answer with the same headers.
pub fn gcra_decision(
    allowed: bool,
    backlog_us: u64,
    interval_us: u64,
    tolerance_us: u64,
    burst: u64,
) -> Decision {
    let full = tolerance_us + interval_us;
    let free_us = full - backlog_us.min(full);
    let remaining = (free_us / interval_us).min(burst + 1);
    Decision {
        allowed,
        remaining,
        reset_secs: backlog_us.div_ceil(1_000_000),
        retry_after_secs: if allowed {
            0
        } else {
            backlog_us
                .saturating_sub(tolerance_us)
                .div_ceil(1_000_000)
                .max(1)
        },
    }
}

/// The interval between requests of one key at `rps`, in µs (both scopes round alike).
pub fn interval_us(rps: f64) -> u64 {
    ((1_000_000.0 / rps.max(1e-6)).round() as u64).max(1)
}

impl Decision {
    /// Admitted without figures: a cluster limit that failed open.
    pub const UNKNOWN_ADMITTED: Decision = Decision {
        allowed: true,
        remaining: 0,
        reset_secs: 0,
        retry_after_secs: 0,
    };
}

/// A fixed-memory table of GCRA buckets.
pub struct RateLimiter {
    slots: Box<[AtomicU64]>,
    mask: usize,
    interval_us: u64,
    tolerance_us: u64,
    burst: u64,
    hasher: ahash::RandomState,
}

/// Monotonic microseconds since the first call; a fixed epoch keeps TATs inside 44 bits
/// (about 200 days, after which TATs wrap harmlessly to "idle").
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 & TAT_MASK
}

impl RateLimiter {
    /// A limiter for `rps` requests per second with `burst` extra at once, over `slots` keys
    /// (rounded up to a power of two).
    pub fn new(rps: f64, burst: u64, slots: usize) -> RateLimiter {
        let n = slots.max(2).next_power_of_two();
        let interval_us = interval_us(rps);
        RateLimiter {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            interval_us,
            tolerance_us: interval_us.saturating_mul(burst),
            burst,
            hasher: ahash::RandomState::new(),
        }
    }

    /// Bytes of memory held by the table (fixed for the limiter's lifetime).
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<AtomicU64>()
    }

    /// Checks and, when allowed, counts one request for `key`.
    pub fn check<K: Hash + ?Sized>(&self, key: &K) -> Decision {
        self.check_at(key, now_us())
    }

    /// [`check`](Self::check) at an explicit time, for tests and benches.
    pub fn check_at<K: Hash + ?Sized>(&self, key: &K, now: u64) -> Decision {
        let h = self.hasher.hash_one(key);
        let fp = (h >> TAT_BITS) | 1; // never 0, so an empty slot never matches
        let first = (h as usize) & self.mask;
        let second = ((h >> 24) as usize ^ 0x9e37) & self.mask;
        loop {
            let (slot, current) = self.pick(first, second, fp, now);
            let stored = current & TAT_MASK;
            let owned = current >> TAT_BITS == fp;
            // An idle slot of another key starts fresh; a busy one is shared (conservative).
            let tat = if self.idle(current, now) {
                now
            } else if owned {
                stored.max(now)
            } else {
                stored
            };
            if tat - now > self.tolerance_us {
                return self.decision(false, tat, now);
            }
            let new_tat = (tat + self.interval_us) & TAT_MASK;
            let next = (fp << TAT_BITS) | new_tat;
            if slot
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return self.decision(true, new_tat, now);
            }
        }
    }

    /// The slot this key uses: one it already owns, else an idle one, else the emptier one.
    fn pick(&self, a: usize, b: usize, fp: u64, now: u64) -> (&AtomicU64, u64) {
        let (sa, sb) = (&self.slots[a], &self.slots[b]);
        let (va, vb) = (sa.load(Ordering::Acquire), sb.load(Ordering::Acquire));
        let idle = |v: u64| self.idle(v, now);
        if va >> TAT_BITS == fp {
            (sa, va)
        } else if vb >> TAT_BITS == fp {
            (sb, vb)
        } else if idle(va) {
            (sa, va)
        } else if idle(vb) {
            (sb, vb)
        } else if va & TAT_MASK <= vb & TAT_MASK {
            (sa, va)
        } else {
            (sb, vb)
        }
    }

    /// A slot is idle when its bucket is full again, or when its TAT lies further ahead than
    /// any admission can push it (left over from before the 44-bit clock wrapped).
    fn idle(&self, slot: u64, now: u64) -> bool {
        let tat = slot & TAT_MASK;
        slot == 0 || tat <= now || tat > now + self.tolerance_us + self.interval_us
    }

    fn decision(&self, allowed: bool, tat: u64, now: u64) -> Decision {
        gcra_decision(
            allowed,
            tat.saturating_sub(now),
            self.interval_us,
            self.tolerance_us,
            self.burst,
        )
    }

    /// The configured interval between requests of one key.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_burst_then_rate() {
        let rl = RateLimiter::new(10.0, 5, 1024);
        let t0 = 1_000_000;
        // At one instant: the first request plus `burst` extra.
        let admitted = (0..20).filter(|_| rl.check_at("k", t0).allowed).count();
        assert_eq!(admitted, 6);
        let d = rl.check_at("k", t0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_secs, 1);
        // Driven at 10x the rate for 10 s: rate * 10 s + burst (+1), within 10%.
        let mut ok = 0;
        for i in 0..1000u64 {
            if rl.check_at("k", t0 + i * 10_000).allowed {
                ok += 1;
            }
        }
        assert!(
            (95..=111).contains(&(ok + admitted)),
            "admitted {}",
            ok + admitted
        );
    }

    #[test]
    fn keys_are_isolated() {
        let rl = RateLimiter::new(1.0, 0, 1024);
        assert!(rl.check_at("a", 5_000_000).allowed);
        assert!(!rl.check_at("a", 5_000_000).allowed);
        assert!(rl.check_at("b", 5_000_000).allowed);
        assert!(rl.check_at("a", 6_000_001).allowed);
    }

    #[test]
    fn a_million_keys_use_fixed_memory() {
        let rl = RateLimiter::new(100.0, 10, 4096);
        let before = rl.memory_bytes();
        for i in 0..1_000_000u64 {
            rl.check_at(&i, 10_000_000 + i);
        }
        assert_eq!(rl.memory_bytes(), before);
        // A fresh key after the flood is still admitted: flooded slots go idle and are reused.
        assert!(rl.check_at("late", 30_000_000).allowed);
    }
}
