//! Cluster-wide rate limits (`scope: cluster`): the local limiter's GCRA, run in Redis by one
//! atomic script, so every gateway on the same Redis spends the same buckets.
//!
//! One request costs one `EVALSHA` (an `EVAL` once per Redis process, after `NOSCRIPT`). The
//! script reads Redis's own clock (`TIME`), so gateway clocks never matter, and stores the
//! key's TAT with an expiry at that TAT: an idle key vanishes once its bucket is full again.
//!
//! A key Redis has refused is known to stay refused until its TAT comes within the burst
//! tolerance (refusals do not move the TAT, on any gateway). A small fixed-size table
//! remembers that instant per key, and requests until then are refused here without a round
//! trip: under a flood Redis sees about one command per interval per gateway and key.

use super::rate_limit::{gcra_decision, interval_us, now_us, Decision};
use crate::config::{FailureMode, RateLimitConfig};
use crate::redis::{BackendError, RedisBackend};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const UNTIL_BITS: u32 = 44;
const UNTIL_MASK: u64 = (1 << UNTIL_BITS) - 1;
/// Entries of the refused-until table; a key that loses its entry only costs a round trip.
const MAX_SHORTCUT_SLOTS: usize = 65_536;

/// KEYS[1] the bucket; ARGV[1] the interval, ARGV[2] the burst tolerance, both in µs.
/// Returns {1 admitted | 0 refused, µs the TAT lies ahead of now}.
const GCRA_LUA: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now}
end
tat = tat + interval
-- %d: a bare number would be written with 14 significant digits, about 100 us off.
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX',
  string.format('%d', math.ceil((tat - now) / 1000)))
return {1, tat - now}
"#;

fn script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA_LUA))
}

/// What a cluster limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Redis (or the local shortcut) decided, exactly as the local limiter would.
    Decided(Decision),
    /// Redis could not answer in time and `failure_mode: open` admits the request.
    FailedOpen,
    /// Redis could not answer in time and `failure_mode: closed` refuses the request.
    FailedClosed,
}

/// A compiled `scope: cluster` limit of one route.
pub struct ClusterLimit {
    prefix: Box<[u8]>,
    interval_us: u64,
    tolerance_us: u64,
    burst: u64,
    failure_mode: FailureMode,
    /// Per key: a 20-bit fingerprint and the local µs (see [`now_us`]) until which it is refused.
    refused_until: Box<[AtomicU64]>,
    mask: usize,
    hasher: ahash::RandomState,
}

impl ClusterLimit {
    /// The limit of `route` (its name is part of every Redis key, so it must match across
    /// gateways).
    pub fn new(cfg: &RateLimitConfig, route: &str) -> ClusterLimit {
        let n = cfg.slots.clamp(2, MAX_SHORTCUT_SLOTS).next_power_of_two();
        let interval_us = interval_us(cfg.requests_per_second);
        ClusterLimit {
            prefix: format!("avx:rl:{route}:").into_bytes().into(),
            interval_us,
            tolerance_us: interval_us.saturating_mul(cfg.burst),
            burst: cfg.burst,
            failure_mode: cfg.failure_mode,
            refused_until: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            hasher: ahash::RandomState::new(),
        }
    }

    /// The Redis key prefix of this route's buckets (`avx:rl:ROUTE:`).
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Checks and, when admitted, counts one request for the key `tag` + `value` (the
    /// Redis key is the route's prefix followed by both).
    pub async fn check(&self, backend: Option<&RedisBackend>, tag: &[u8], value: &[u8]) -> Verdict {
        let h = self.hasher.hash_one((tag, value));
        let slot = &self.refused_until[h as usize & self.mask];
        let fp = (h >> UNTIL_BITS) | 1;
        if let Some(wait) = self.refused_for(slot, fp, now_us()) {
            return Verdict::Decided(self.decision(false, wait + self.tolerance_us));
        }
        let Some(backend) = backend else {
            return self.failed();
        };
        // Boxed: the round trip's state is large, and would otherwise sit in every request's
        // future, local-scope routes' too.
        match Box::pin(self.ask(backend, tag, value)).await {
            Ok((admitted, backlog)) => {
                if !admitted {
                    let wait = backlog.saturating_sub(self.tolerance_us);
                    slot.store(
                        (fp << UNTIL_BITS) | ((now_us() + wait) & UNTIL_MASK),
                        Ordering::Relaxed,
                    );
                }
                Verdict::Decided(self.decision(admitted, backlog))
            }
            Err(_) => self.failed(),
        }
    }

    /// µs the key in `slot` stays refused, when it is known to. A refusal never waits more
    /// than one interval (refusals do not move the TAT), so a longer wait is an entry from
    /// before the 44-bit clock wrapped, and is ignored.
    fn refused_for(&self, slot: &AtomicU64, fp: u64, now: u64) -> Option<u64> {
        let entry = slot.load(Ordering::Relaxed);
        let until = entry & UNTIL_MASK;
        (entry >> UNTIL_BITS == fp && until > now && until - now <= self.interval_us)
            .then(|| until - now)
    }

    fn failed(&self) -> Verdict {
        match self.failure_mode {
            FailureMode::Open => Verdict::FailedOpen,
            FailureMode::Closed => Verdict::FailedClosed,
        }
    }

    fn decision(&self, allowed: bool, backlog_us: u64) -> Decision {
        gcra_decision(
            allowed,
            backlog_us,
            self.interval_us,
            self.tolerance_us,
            self.burst,
        )
    }

    /// One round trip: `EVALSHA`, or `EVAL` when this Redis has not seen the script yet.
    async fn ask(
        &self,
        backend: &RedisBackend,
        tag: &[u8],
        value: &[u8],
    ) -> Result<(bool, u64), BackendError> {
        let script = script();
        let mut full = Vec::with_capacity(self.prefix.len() + tag.len() + value.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(tag);
        full.extend_from_slice(value);
        let full = &full[..];
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(script.get_hash())
            .arg(1)
            .arg(full)
            .arg(self.interval_us)
            .arg(self.tolerance_us);
        let reply: (i64, i64) = backend
            .run(|mut conn| async move {
                match evalsha.query_async(&mut conn).await {
                    Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                        let mut eval = redis::cmd("EVAL");
                        eval.arg(GCRA_LUA)
                            .arg(1)
                            .arg(full)
                            .arg(self.interval_us)
                            .arg(self.tolerance_us);
                        eval.query_async(&mut conn).await
                    }
                    other => other,
                }
            })
            .await?;
        Ok((reply.0 == 1, reply.1.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn limit(extra: &str) -> ClusterLimit {
        let yaml = format!(
            "redis: {{ url: \"redis://127.0.0.1:1\" }}\n\
             rate_limit: {{ requests_per_second: 10, burst: 2, scope: cluster{extra} }}\n"
        );
        let cfg = serde_yaml::from_str::<Config>(&yaml).expect("config");
        ClusterLimit::new(cfg.rate_limit.as_ref().expect("rate_limit"), "api")
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn without_an_answer_the_failure_mode_decides() {
        assert_eq!(limit("").failure_mode, FailureMode::Open);
        assert_eq!(
            block_on(limit("").check(None, b"ip:", b"1")),
            Verdict::FailedOpen
        );
        assert_eq!(
            block_on(limit(", failure_mode: closed").check(None, b"ip:", b"1")),
            Verdict::FailedClosed
        );
    }

    #[test]
    fn a_refused_key_is_answered_locally_until_its_instant_and_others_are_not() {
        let l = limit(", failure_mode: closed");
        let h = l.hasher.hash_one((&b"ip:"[..], &b"1"[..]));
        let slot = &l.refused_until[h as usize & l.mask];
        let fp = (h >> UNTIL_BITS) | 1;
        let now = now_us();
        slot.store((fp << UNTIL_BITS) | (now + 50_000), Ordering::Relaxed);
        match block_on(l.check(None, b"ip:", b"1")) {
            Verdict::Decided(d) => {
                assert!(!d.allowed);
                assert_eq!((d.remaining, d.retry_after_secs), (0, 1));
            }
            other => panic!("expected a local refusal, got {other:?}"),
        }
        assert_eq!(block_on(l.check(None, b"ip:", b"2")), Verdict::FailedClosed);
        // Past the instant, or implausibly far ahead (a wrapped clock), Redis is asked again.
        assert_eq!(l.refused_for(slot, fp, now + 50_001), None);
        slot.store((fp << UNTIL_BITS) | (now + 10_000_000), Ordering::Relaxed);
        assert_eq!(l.refused_for(slot, fp, now), None);
    }

    #[test]
    fn keys_carry_the_route_name() {
        assert_eq!(limit("").prefix(), b"avx:rl:api:");
    }
}
