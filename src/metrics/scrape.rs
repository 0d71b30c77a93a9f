//! Series read at scrape time from the atomics the upstreams already keep: breaker state and
//! transitions, backend health, passive ejection and in-flight counts.
//!
//! Nothing is recorded on the request path for these; a scrape reads the current values.

use crate::cache::CacheStore;
use crate::policy::now_us;
use crate::upstream::Upstream;
use arc_swap::{ArcSwap, ArcSwapOption};
use pingora_core::services::listening::ConnectionLimit;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What the scrape-time collectors read: the live runtime's upstreams and cache store,
/// replaced when a reload goes live (the registry and its collectors outlive it).
#[derive(Default)]
pub(super) struct LiveSources {
    /// The upstream pools of the live runtime.
    pub(super) upstreams: ArcSwap<Vec<Arc<Upstream>>>,
    /// The live cache store, when a route caches.
    pub(super) cache: ArcSwapOption<CacheStore>,
    /// The live tracer's export counters, when tracing is on.
    pub(super) tracing: ArcSwapOption<crate::tracing::Stats>,
    /// The live Redis backend of cluster rate limits, when `redis:` is configured.
    pub(super) redis: ArcSwapOption<crate::redis::RedisBackend>,
}

/// Reads breaker and backend state from the upstream pools at scrape time.
pub(super) struct UpstreamCollector {
    sources: Arc<LiveSources>,
    breaker_state: Desc,
    breaker_transitions: Desc,
    backend_healthy: Desc,
    backend_ejected: Desc,
    backend_in_flight: Desc,
    dns_lookups: Desc,
    resolved_addresses: Desc,
}

fn desc(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Desc> {
    Desc::new(
        name.into(),
        help.into(),
        labels.iter().map(|l| l.to_string()).collect(),
        HashMap::new(),
    )
}

impl UpstreamCollector {
    /// A collector over these pools.
    pub(super) fn new(sources: Arc<LiveSources>) -> prometheus::Result<UpstreamCollector> {
        Ok(UpstreamCollector {
            sources,
            breaker_state: desc(
                "avx_circuit_breaker_state",
                "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
                &["upstream"],
            )?,
            breaker_transitions: desc(
                "avx_circuit_breaker_transitions_total",
                "Circuit breaker state changes per upstream.",
                &["upstream"],
            )?,
            backend_healthy: desc(
                "avx_backend_healthy",
                "1 when the backend passes its active health check (or has none), else 0.",
                &["backend", "upstream"],
            )?,
            backend_ejected: desc(
                "avx_backend_ejected",
                "1 while passive health keeps the backend out of selection, else 0.",
                &["backend", "upstream"],
            )?,
            backend_in_flight: desc(
                "avx_backend_in_flight",
                "Requests in flight to the backend.",
                &["backend", "upstream"],
            )?,
            dns_lookups: desc(
                "avx_dns_lookups_total",
                "DNS lookups of an upstream's server names, by result: ok or error.",
                &["result", "upstream"],
            )?,
            resolved_addresses: desc(
                "avx_upstream_resolved_addresses",
                "Addresses in a DNS-discovered upstream's current backend set.",
                &["upstream"],
            )?,
        })
    }
}

impl Collector for UpstreamCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![
            &self.breaker_state,
            &self.breaker_transitions,
            &self.backend_healthy,
            &self.backend_ejected,
            &self.backend_in_flight,
            &self.dns_lookups,
            &self.resolved_addresses,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = now_us();
        let (mut state, mut transitions) = (Vec::new(), Vec::new());
        let (mut healthy, mut ejected, mut in_flight) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lookups, mut resolved) = (Vec::new(), Vec::new());
        let upstreams = self.sources.upstreams.load();
        for up in upstreams.iter() {
            if let Some(b) = &up.breaker {
                let l = || labels(&[("upstream", &up.name)]);
                state.push(gauge_metric(l(), b.state() as u8 as f64));
                transitions.push(counter(l(), b.transitions() as f64));
            }
            if let Some(dns) = &up.dns {
                let (ok, error) = dns.lookups();
                for (result, n) in [("ok", ok), ("error", error)] {
                    let l = labels(&[("result", result), ("upstream", &up.name)]);
                    lookups.push(counter(l, n as f64));
                }
                resolved.push(gauge_metric(
                    labels(&[("upstream", &up.name)]),
                    dns.resolved_addresses() as f64,
                ));
            }
            for backend in up.backends().iter() {
                let addr = backend.addr.to_string();
                let l = || labels(&[("backend", &addr), ("upstream", &up.name)]);
                healthy.push(gauge_metric(
                    l(),
                    f64::from(u8::from(up.is_healthy(backend))),
                ));
                ejected.push(gauge_metric(
                    l(),
                    f64::from(u8::from(up.is_ejected(backend, now))),
                ));
                in_flight.push(gauge_metric(
                    l(),
                    backend.inflight.load(Ordering::Relaxed) as f64,
                ));
            }
        }
        vec![
            family(&self.breaker_state, MetricType::GAUGE, state),
            family(&self.breaker_transitions, MetricType::COUNTER, transitions),
            family(&self.backend_healthy, MetricType::GAUGE, healthy),
            family(&self.backend_ejected, MetricType::GAUGE, ejected),
            family(&self.backend_in_flight, MetricType::GAUGE, in_flight),
            family(&self.dns_lookups, MetricType::COUNTER, lookups),
            family(&self.resolved_addresses, MetricType::GAUGE, resolved),
        ]
    }
}

/// Reads the downstream connection cap (`server.max_connections`) at scrape time.
pub(super) struct ConnectionCollector {
    limit: Arc<ConnectionLimit>,
    open: Desc,
    rejected: Desc,
}

impl ConnectionCollector {
    /// A collector over the proxy listeners' shared cap.
    pub(super) fn new(limit: Arc<ConnectionLimit>) -> prometheus::Result<ConnectionCollector> {
        Ok(ConnectionCollector {
            limit,
            open: desc(
                "avx_connections_open",
                "Downstream connections open on the proxy listeners.",
                &[],
            )?,
            rejected: desc(
                "avx_connections_rejected_total",
                "Connections closed at accept because server.max_connections were open.",
                &[],
            )?,
        })
    }
}

impl Collector for ConnectionCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.open, &self.rejected]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![
            family(
                &self.open,
                MetricType::GAUGE,
                vec![gauge_metric(Vec::new(), self.limit.open() as f64)],
            ),
            family(
                &self.rejected,
                MetricType::COUNTER,
                vec![counter(Vec::new(), self.limit.rejected() as f64)],
            ),
        ]
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut p = LabelPair::default();
            p.set_name(k.to_string());
            p.set_value(v.to_string());
            p
        })
        .collect()
}

/// A gauge sample with these labels.
pub(super) fn gauge_metric(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_gauge(g);
    m.set_label(labels);
    m
}

fn counter(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

/// A metric family named and described by `desc`.
pub(super) fn family(desc: &Desc, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// Reads the Redis backend's counters at scrape time; they live in the backend, so they
/// survive a reload that keeps it.
pub(super) struct RedisCollector {
    sources: Arc<LiveSources>,
    errors: Desc,
    up: Desc,
}

impl RedisCollector {
    /// A collector over the live `redis:` backend (nothing exported without one).
    pub(super) fn new(sources: Arc<LiveSources>) -> prometheus::Result<Self> {
        Ok(RedisCollector {
            sources,
            errors: desc(
                "avx_ratelimit_backend_errors_total",
                "Redis commands of cluster rate limits that failed: timeout (no answer within redis.timeout_ms) or error.",
                &["kind"],
            )?,
            up: desc(
                "avx_ratelimit_backend_up",
                "1 when the last Redis command of a cluster rate limit succeeded, else 0.",
                &[],
            )?,
        })
    }
}

impl Collector for RedisCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.errors, &self.up]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(b) = self.sources.redis.load_full() else {
            return Vec::new();
        };
        // Both kinds are always present, so a rate() over them never starts from nothing.
        let errors = vec![
            counter(labels(&[("kind", "error")]), b.errors() as f64),
            counter(labels(&[("kind", "timeout")]), b.timeouts() as f64),
        ];
        vec![
            family(&self.errors, MetricType::COUNTER, errors),
            family(
                &self.up,
                MetricType::GAUGE,
                vec![gauge_metric(Vec::new(), f64::from(u8::from(b.is_up())))],
            ),
        ]
    }
}
