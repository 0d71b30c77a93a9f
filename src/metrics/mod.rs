//! Prometheus metrics: the gateway's own registry, the series it exports, and the cheap
//! recording calls the proxy makes at the end of every request.
//!
//! Labels only ever carry names from the config (routes, upstreams, backend addresses) or
//! fixed vocabularies ([`labels`]), so cardinality is bounded by the config. Unmatched requests
//! use the route label `""`.
//!
//! Recording never takes a lock shared across workers once a series exists: per-route children
//! are resolved once and cached ([`route`]), upstream histograms are resolved at build time,
//! and breaker and backend state is read from the upstreams' atomics at scrape time
//! ([`scrape`]).

mod cache;
mod compression;
mod labels;
mod process;
mod route;
mod scrape;
mod tracing;

pub use cache::CacheEvent;
pub use labels::{ErrorKind, LATENCY_BUCKETS, METHODS, STATUS_CLASSES};

use crate::cache::CacheStore;
use crate::routing::{RouteId, RouteTable};
use crate::upstream::{Upstream, UpstreamId};
use http::Method;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry,
};
use route::{RouteFamilies, RouteSlot};
use scrape::LiveSources;
use std::sync::Arc;
use std::time::Duration;

/// Content type of the text exposition served on the admin `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The process's registry and every series family: built once and kept across reloads, so
/// counters never reset when the config changes.
pub struct MetricsHub {
    registry: Registry,
    route_families: RouteFamilies,
    upstream_duration: HistogramVec,
    cache: cache::CacheSeries,
    compression: compression::CompressionSeries,
    access_log_dropped: IntCounter,
    consumer_requests: IntCounterVec,
    mirror_requests: IntCounterVec,
    reloads: IntCounterVec,
    generation: IntGauge,
    loaded_at: Gauge,
    sources: Arc<LiveSources>,
}

/// One runtime's view of the hub: its routes' and upstreams' series, resolved once.
pub struct Metrics {
    hub: Arc<MetricsHub>,
    /// One slot per route, in config order, plus a last one for unmatched requests.
    routes: Box<[RouteSlot]>,
    upstream_duration: Box<[Histogram]>,
}

/// How a config reload ended, the `result` label of `avx_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config is live.
    Ok,
    /// The file did not load or validate; the old config keeps serving.
    Error,
    /// The change needs a binary upgrade (listeners, workers, ...); nothing changed.
    Refused,
}

impl ReloadResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Ok => "ok",
            ReloadResult::Error => "error",
            ReloadResult::Refused => "refused",
        }
    }
}

/// What the proxy observed about one finished request.
#[derive(Debug, Clone)]
pub struct RequestSample<'a> {
    /// The matched route; `None` when no route matched.
    pub route: Option<RouteId>,
    /// The request method (normalised to [`METHODS`]).
    pub method: &'a Method,
    /// Status sent downstream; 0 when no response was sent.
    pub status: u16,
    /// Time from the request header to the end of the response.
    pub duration: Duration,
    /// Index of the upstream asked and how long it took, when one was asked.
    pub upstream: Option<(UpstreamId, Duration)>,
    /// Why the request failed or was refused, if it did.
    pub error: Option<ErrorKind>,
    /// Whether the route's rate limit rejected the request.
    pub rate_limited: bool,
}

/// Holds a route's in-flight gauge up while its request runs (kept in the request context).
#[derive(Debug)]
pub struct RouteInFlight(IntGauge);

impl Drop for RouteInFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl MetricsHub {
    /// Creates the registry and registers every series family.
    pub fn new(
        connections: &Arc<pingora_core::services::listening::ConnectionLimit>,
    ) -> prometheus::Result<Arc<MetricsHub>> {
        let registry = Registry::new();
        let route_families = RouteFamilies::register(&registry)?;
        let sources = Arc::new(LiveSources::default());
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "avx_upstream_duration_seconds",
                "Upstream latency: from the first connect attempt to the upstream's response header.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(scrape::UpstreamCollector::new(sources.clone())?))?;
        registry.register(Box::new(tracing::TracingCollector::new(sources.clone())?))?;
        registry.register(Box::new(scrape::RedisCollector::new(sources.clone())?))?;
        registry.register(Box::new(scrape::ConnectionCollector::new(
            connections.clone(),
        )?))?;
        let access_log_dropped = IntCounter::new(
            "avx_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let consumer_requests = IntCounterVec::new(
            Opts::new(
                "avx_consumer_requests_total",
                "Authenticated requests by consumer: configured names only, others as \"other\".",
            ),
            &["route", "consumer"],
        )?;
        registry.register(Box::new(consumer_requests.clone()))?;
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "avx_mirror_requests_total",
                "Mirrored copies by outcome: sent, dropped (over max_in_flight or no backend), failed.",
            ),
            &["route", "result"],
        )?;
        registry.register(Box::new(mirror_requests.clone()))?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "avx_config_reloads_total",
                "In-process config reloads by result: ok, error (bad file), refused (needs an upgrade).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        // Every result at zero from the start, so alerts on increase() see the first failure.
        for r in [ReloadResult::Ok, ReloadResult::Error, ReloadResult::Refused] {
            reloads.with_label_values(&[r.as_str()]);
        }
        let generation = IntGauge::new(
            "avx_config_generation",
            "Generation of the live config: 1 at start, +1 per successful reload.",
        )?;
        registry.register(Box::new(generation.clone()))?;
        let loaded_at = Gauge::new(
            "avx_config_loaded_timestamp_seconds",
            "Unix time at which the live config was loaded.",
        )?;
        registry.register(Box::new(loaded_at.clone()))?;
        let hub = MetricsHub {
            mirror_requests,
            consumer_requests,
            cache: cache::CacheSeries::register(&registry, sources.clone())?,
            compression: compression::CompressionSeries::register(&registry)?,
            registry,
            route_families,
            upstream_duration,
            access_log_dropped,
            reloads,
            generation,
            loaded_at,
            sources,
        };
        process::register_build_info(&hub.registry)?;
        process::register_process(&hub.registry)?;
        Ok(Arc::new(hub))
    }

    /// Counts one reload attempt.
    pub fn record_reload(&self, result: ReloadResult) {
        self.reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// Sets the live config's generation and load time (seconds since the Unix epoch).
    pub fn set_config(&self, generation: u64, loaded_at_unix: f64) {
        self.generation.set(generation as i64);
        self.loaded_at.set(loaded_at_unix);
    }

    /// The counter of access log lines dropped under back-pressure.
    pub fn access_log_dropped(&self) -> &IntCounter {
        &self.access_log_dropped
    }

    /// The registry holding every series (for embedding or custom exposition).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The text exposition of every series (served with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 * 1024);
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics: {e}");
        }
        buf
    }
}

impl Metrics {
    /// Resolves the series of these routes and upstreams in the hub.
    pub fn new(hub: &Arc<MetricsHub>, routes: &RouteTable, upstreams: &[Arc<Upstream>]) -> Metrics {
        let routes = routes
            .routes()
            .iter()
            .map(|r| RouteSlot::new(r.name.clone()))
            .chain(std::iter::once(RouteSlot::new("".into())))
            .collect();
        let upstream_duration = upstreams
            .iter()
            .map(|u| hub.upstream_duration.with_label_values(&[&u.name]))
            .collect();
        Metrics {
            hub: hub.clone(),
            routes,
            upstream_duration,
        }
    }

    /// Points the scrape-time series at this runtime's upstreams and cache store; called when
    /// the runtime goes live.
    pub fn go_live(
        &self,
        upstreams: &[Arc<Upstream>],
        cache: Option<&CacheStore>,
        tracing: Option<&Arc<crate::tracing::Stats>>,
        redis: Option<&Arc<crate::redis::RedisBackend>>,
    ) {
        let sources = &self.hub.sources;
        sources.redis.store(redis.cloned());
        sources.upstreams.store(Arc::new(upstreams.to_vec()));
        sources.cache.store(cache.cloned().map(Arc::new));
        sources.tracing.store(tracing.cloned());
    }

    /// The process-wide hub these series live in.
    pub fn hub(&self) -> &Arc<MetricsHub> {
        &self.hub
    }

    fn slot(&self, route: Option<RouteId>) -> &RouteSlot {
        let unmatched = self.routes.len() - 1;
        let i = route.map_or(unmatched, RouteId::index);
        &self.routes[i.min(unmatched)]
    }

    /// Counts a request as in flight on `route` until the returned guard is dropped.
    pub fn enter_route(&self, route: RouteId) -> RouteInFlight {
        let gauge = &self
            .slot(Some(route))
            .series(&self.hub.route_families)
            .in_flight;
        gauge.inc();
        RouteInFlight(gauge.clone())
    }

    /// Records one finished request: its count, latency, error kind and upstream latency.
    pub fn record(&self, s: &RequestSample<'_>) {
        let slot = self.slot(s.route);
        let f = &self.hub.route_families;
        let series = slot.series(f);
        let method = labels::method_index(s.method);
        let class = labels::status_class_index(s.status);
        series.requests(f, slot.name(), method, class).inc();
        series.duration.observe(s.duration.as_secs_f64());
        if let Some(kind) = s.error {
            series.errors(f, slot.name(), kind).inc();
        }
        if s.rate_limited {
            series.rate_limited.inc();
        }
        if let Some((i, d)) = s.upstream {
            if let Some(h) = self.upstream_duration.get(i.index()) {
                h.observe(d.as_secs_f64());
            }
        }
    }

    /// Counts one authenticated request under its consumer's label (configured names, or
    /// `other`), so the series stay bounded by the config. Only requests with a consumer pay
    /// for the label lookup.
    pub fn record_consumer(&self, route: Option<RouteId>, consumer: &str) {
        let slot = self.slot(route);
        self.hub
            .consumer_requests
            .with_label_values(&[slot.name(), consumer])
            .inc();
    }

    /// The outcome counters of a route's mirror, resolved once when the runtime is built.
    pub fn mirror_counters(&self, route: &str) -> crate::upstream::MirrorCounters {
        let c = |result: &str| self.hub.mirror_requests.with_label_values(&[route, result]);
        crate::upstream::MirrorCounters {
            sent: c("sent"),
            dropped: c("dropped"),
            failed: c("failed"),
        }
    }

    /// Counts one cache lookup's outcome.
    pub fn record_cache(&self, event: CacheEvent) {
        self.hub.cache.record(event);
    }

    /// Adds one compressed response's body bytes before and after compression.
    pub fn record_compression(&self, algorithm: &str, bytes_in: u64, bytes_out: u64) {
        self.hub.compression.record(algorithm, bytes_in, bytes_out);
    }

    /// Counts a decompressed response cut off at `max_decompressed_bytes` (or as corrupt).
    pub fn record_decompression_cut(&self) {
        self.hub.compression.record_cut();
    }

    /// The text exposition of every series (served with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> Vec<u8> {
        self.hub.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::runtime::Runtime;

    fn metrics() -> Runtime {
        let cfg: Config = serde_yaml::from_str(
            r#"
upstreams:
  pool:
    servers: [{ address: "127.0.0.1:9" }]
    circuit_breaker: {}
routes:
  - { name: api, match: { path_prefix: /api }, upstream: pool }
"#,
        )
        .unwrap();
        Runtime::build(&cfg, &Default::default(), None).unwrap()
    }

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.encode()).unwrap()
    }

    #[test]
    fn records_requests_errors_and_latency() {
        let rt = metrics();
        let m = &rt.metrics;
        let guard = m.enter_route(RouteId::new(0));
        assert!(text(m).contains("avx_route_in_flight{route=\"api\"} 1"));
        drop(guard);
        m.record(&RequestSample {
            route: Some(RouteId::new(0)),
            method: &Method::GET,
            status: 502,
            duration: Duration::from_micros(300),
            upstream: Some((UpstreamId::new(0), Duration::from_micros(200))),
            error: Some(ErrorKind::Connect),
            rate_limited: false,
        });
        m.record(&RequestSample {
            route: None,
            method: &Method::from_bytes(b"BREW").unwrap(),
            status: 404,
            duration: Duration::from_micros(50),
            upstream: None,
            error: Some(ErrorKind::NoRoute),
            rate_limited: false,
        });
        let t = text(m);
        for want in [
            "avx_route_in_flight{route=\"api\"} 0",
            "avx_requests_total{method=\"GET\",route=\"api\",status_class=\"5xx\"} 1",
            "avx_requests_total{method=\"other\",route=\"\",status_class=\"4xx\"} 1",
            "avx_errors_total{kind=\"connect\",route=\"api\"} 1",
            "avx_errors_total{kind=\"no_route\",route=\"\"} 1",
            "avx_request_duration_seconds_bucket{route=\"api\",le=\"0.0005\"} 1",
            "avx_request_duration_seconds_bucket{route=\"api\",le=\"0.00025\"} 0",
            "avx_upstream_duration_seconds_bucket{upstream=\"pool\",le=\"0.00025\"} 1",
            "avx_circuit_breaker_state{upstream=\"pool\"} 0",
            "avx_circuit_breaker_transitions_total{upstream=\"pool\"} 0",
            "avx_backend_healthy{backend=\"127.0.0.1:9\",upstream=\"pool\"} 1",
            "avx_backend_in_flight{backend=\"127.0.0.1:9\",upstream=\"pool\"} 0",
            "avx_cache_hits_total 0",
            "avx_compression_bytes_in_total{algorithm=\"gzip\"} 0",
            "avx_access_log_dropped_total 0",
            "avx_build_info{git_hash=",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(
            !t.contains("status_class=\"2xx\""),
            "unused series are not exported"
        );
    }

    #[test]
    fn cache_and_compression_api() {
        let rt = metrics();
        let m = &rt.metrics;
        m.record_cache(CacheEvent::Hit);
        m.record_cache(CacheEvent::Hit);
        m.record_cache(CacheEvent::Stale);
        m.record_compression("brotli", 1000, 100);
        m.record_compression("de-gzip", 7, 70);
        m.record_compression("dcz", 10, 5);
        let t = text(m);
        for want in [
            "avx_cache_hits_total 2",
            "avx_cache_stale_total 1",
            "avx_cache_misses_total 0",
            "avx_cache_evictions_total 0",
            "avx_cache_entries 0",
            "avx_cache_bytes 0",
            "avx_compression_bytes_in_total{algorithm=\"gzip\"} 0",
            "avx_compression_bytes_in_total{algorithm=\"br\"} 1000",
            "avx_compression_bytes_out_total{algorithm=\"br\"} 100",
            "avx_compression_bytes_out_total{algorithm=\"other\"} 5",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
    }
}
