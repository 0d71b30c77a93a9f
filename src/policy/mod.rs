//! Traffic policy applied in `request_filter`: rate limits and concurrency caps.

mod client_ip;
mod cluster;
mod concurrency;
mod rate_limit;

pub use cluster::{ClusterLimit, Verdict};

pub use client_ip::TrustedProxies;
pub use concurrency::{ConcurrencyGuard, ConcurrencyLimit};
pub use rate_limit::{gcra_decision, now_us, Decision, RateLimiter};

use crate::config::{Config, ConfigError, KeyPath, RateLimitConfig};
use http::HeaderName;
use std::net::IpAddr;

/// What a rate limit is keyed on (`rate_limit.key`), parsed once by serde.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client IP (see [`TrustedProxies`]).
    ClientIp,
    /// A request header's value (requests without it share one bucket).
    Header(HeaderName),
    /// One bucket for the whole route.
    Route,
    /// The authenticated consumer; requests without one are keyed by client IP.
    Consumer,
}

crate::config::deserialize_via_try_from!(LimitKey, "client_ip, consumer, header:NAME or route");

impl TryFrom<String> for LimitKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "client_ip" => Ok(LimitKey::ClientIp),
            "route" => Ok(LimitKey::Route),
            "consumer" => Ok(LimitKey::Consumer),
            other => other
                .strip_prefix("header:")
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .map(LimitKey::Header)
                .ok_or_else(|| {
                    format!("invalid key {s:?}: expected client_ip, consumer, header:NAME or route")
                }),
        }
    }
}

/// A compiled `rate_limit:` for one route.
pub struct RoutePolicy {
    /// The bucket table.
    pub limiter: std::sync::Arc<RateLimiter>,
    /// What the buckets are keyed on.
    pub key: LimitKey,
    /// Status for rejected requests.
    pub status: u16,
    /// Whether admitted responses carry `RateLimit-*` headers.
    pub headers: bool,
    /// `RateLimit-Limit` value, pre-rendered.
    pub limit_header: http::HeaderValue,
    /// `RateLimit-Policy` value, pre-rendered.
    pub policy_header: http::HeaderValue,
    /// IPv6 clients share a bucket per prefix of this length.
    pub ipv6_prefix: u8,
    /// With `scope: cluster`: the buckets in Redis (then `limiter` is unused and tiny).
    pub cluster: Option<ClusterLimit>,
}

impl RoutePolicy {
    /// Compiles a validated `rate_limit:` section of the route named `route`.
    /// `kept` is the table of the limit this one replaces on a reload, when its buckets still
    /// mean the same (no new table is allocated then).
    pub fn build(
        cfg: &RateLimitConfig,
        path: &KeyPath,
        route: &str,
        kept: Option<std::sync::Arc<RateLimiter>>,
    ) -> Result<RoutePolicy, ConfigError> {
        let key = cfg.key.clone();
        let limit = cfg.requests_per_second.ceil() as u64;
        let render = |s: String| {
            http::HeaderValue::from_str(&s)
                .map_err(|_| ConfigError::at(path, "cannot render rate-limit header"))
        };
        let cluster = match cfg.scope {
            crate::config::LimitScope::Local => None,
            crate::config::LimitScope::Cluster => Some(ClusterLimit::new(cfg, route)),
        };
        // A cluster limit keeps its buckets in Redis: the local table shrinks to nothing.
        let slots = if cluster.is_some() { 2 } else { cfg.slots };
        Ok(RoutePolicy {
            limiter: kept.unwrap_or_else(|| {
                std::sync::Arc::new(RateLimiter::new(cfg.requests_per_second, cfg.burst, slots))
            }),
            key,
            status: cfg.status,
            headers: cfg.headers,
            limit_header: render(limit.to_string())?,
            policy_header: render(format!("{limit};w=1;burst={}", cfg.burst))?,
            ipv6_prefix: cfg.ipv6_prefix,
            cluster,
        })
    }

    /// The bucket key of a client IP: IPv4 as is (also when mapped into IPv6), IPv6 cut to
    /// `ipv6_prefix`, because one IPv6 client commonly holds a whole /64.
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6);
                    let keep = u32::from(self.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                    IpAddr::V6((bits & mask).into())
                }
            },
        }
    }
}

/// The protections of one route: its rate limit and concurrency cap.
#[derive(Default)]
pub struct RouteGuards {
    /// The route's own `rate_limit`, or the global default.
    pub rate: Option<RoutePolicy>,
    /// `max_in_flight`.
    pub in_flight: Option<std::sync::Arc<ConcurrencyLimit>>,
}

/// Compiles every route's guards, in route order.
pub fn build_route_guards(
    config: &Config,
    kept: impl Fn(usize) -> Option<std::sync::Arc<RateLimiter>>,
) -> Result<Vec<RouteGuards>, ConfigError> {
    let root = KeyPath::root();
    config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let rate = match (&r.rate_limit, &config.rate_limit) {
                (Some(own), _) => Some(RoutePolicy::build(
                    own,
                    &root.key("routes").index(i).key("rate_limit"),
                    &r.name,
                    kept(i),
                )?),
                (None, Some(global)) => Some(RoutePolicy::build(
                    global,
                    &root.key("rate_limit"),
                    &r.name,
                    kept(i),
                )?),
                (None, None) => None,
            };
            Ok(RouteGuards {
                rate,
                in_flight: r
                    .max_in_flight
                    .map(|n| std::sync::Arc::new(ConcurrencyLimit::new(n))),
            })
        })
        .collect()
}
