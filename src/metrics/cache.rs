//! Response-cache series: lookups by outcome (counted per request), and evictions, entries and
//! bytes (read from the store at scrape time).

use super::scrape::{family, gauge_metric, LiveSources};
use crate::cache::CacheStore;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use prometheus::{IntCounter, Registry};
use std::collections::HashMap;
use std::sync::Arc;

/// A cache lookup's outcome, for [`Metrics::record_cache`](super::Metrics::record_cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEvent {
    /// A cached response was served (fresh, or revalidated with the upstream).
    Hit,
    /// Nothing usable was cached (or it had expired); the upstream's answer was served.
    Miss,
    /// A stale cached response was served (stale-while-revalidate or stale-if-error).
    Stale,
}

/// The per-request cache counters, registered at zero whether or not a cache is configured.
pub(super) struct CacheSeries {
    hits: IntCounter,
    misses: IntCounter,
    stale: IntCounter,
}

impl CacheSeries {
    /// Creates the series (and the scrape-time size collector) and registers them.
    pub(super) fn register(
        registry: &Registry,
        sources: Arc<LiveSources>,
    ) -> prometheus::Result<CacheSeries> {
        let s = CacheSeries {
            hits: IntCounter::new(
                "avx_cache_hits_total",
                "Responses served from the cache (fresh or revalidated).",
            )?,
            misses: IntCounter::new(
                "avx_cache_misses_total",
                "Cacheable requests the cache could not answer (absent or expired).",
            )?,
            stale: IntCounter::new(
                "avx_cache_stale_total",
                "Stale responses served from the cache.",
            )?,
        };
        registry.register(Box::new(s.hits.clone()))?;
        registry.register(Box::new(s.misses.clone()))?;
        registry.register(Box::new(s.stale.clone()))?;
        registry.register(Box::new(StoreCollector::new(sources)?))?;
        Ok(s)
    }

    /// Counts one lookup outcome.
    pub(super) fn record(&self, event: CacheEvent) {
        match event {
            CacheEvent::Hit => self.hits.inc(),
            CacheEvent::Miss => self.misses.inc(),
            CacheEvent::Stale => self.stale.inc(),
        }
    }
}

/// Reads the store's size and eviction count at scrape time (zero when there is no cache).
struct StoreCollector {
    sources: Arc<LiveSources>,
    evictions: Desc,
    entries: Desc,
    bytes: Desc,
}

impl StoreCollector {
    fn new(sources: Arc<LiveSources>) -> prometheus::Result<StoreCollector> {
        let desc =
            |name: &str, help: &str| Desc::new(name.into(), help.into(), vec![], HashMap::new());
        Ok(StoreCollector {
            sources,
            evictions: desc(
                "avx_cache_evictions_total",
                "Entries evicted from the cache to make room.",
            )?,
            entries: desc("avx_cache_entries", "Entries currently in the cache.")?,
            bytes: desc(
                "avx_cache_bytes",
                "Estimated memory held by the cached entries, as weighed against max_bytes.",
            )?,
        })
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.evictions, &self.entries, &self.bytes]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let store = self.sources.cache.load();
        let (evictions, entries, bytes) = store.as_deref().map_or((0, 0, 0), |s: &CacheStore| {
            (s.evictions(), s.entries() as u64, s.bytes() as u64)
        });
        let mut c = Counter::default();
        c.set_value(evictions as f64);
        let mut counter = Metric::default();
        counter.set_counter(c);
        vec![
            family(&self.evictions, MetricType::COUNTER, vec![counter]),
            family(
                &self.entries,
                MetricType::GAUGE,
                vec![gauge_metric(vec![], entries as f64)],
            ),
            family(
                &self.bytes,
                MetricType::GAUGE,
                vec![gauge_metric(vec![], bytes as f64)],
            ),
        ]
    }
}
