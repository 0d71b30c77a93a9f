//! Tracing export counters, read at scrape time from the live tracer's atomics (a reload may
//! keep the tracer or replace it; nothing is copied into the registry).

use super::scrape::LiveSources;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::Arc;

/// `avx_tracing_spans_exported_total` and `avx_tracing_spans_dropped_total`.
pub(super) struct TracingCollector {
    sources: Arc<LiveSources>,
    exported: Desc,
    dropped: Desc,
}

impl TracingCollector {
    /// A collector over the live tracer's counters (nothing exported while tracing is off).
    pub(super) fn new(sources: Arc<LiveSources>) -> prometheus::Result<TracingCollector> {
        let desc = |name: &str, help: &str| {
            Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())
        };
        Ok(TracingCollector {
            sources,
            exported: desc(
                "avx_tracing_spans_exported_total",
                "Spans the OTLP collector accepted.",
            )?,
            dropped: desc(
                "avx_tracing_spans_dropped_total",
                "Spans lost: the export queue was full, or their export failed.",
            )?,
        })
    }
}

fn family(desc: &Desc, v: u64) -> MetricFamily {
    let mut c = Counter::default();
    c.set_value(v as f64);
    let mut m = Metric::default();
    m.set_counter(c);
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(MetricType::COUNTER);
    f.set_metric(vec![m]);
    f
}

impl Collector for TracingCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.exported, &self.dropped]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(stats) = self.sources.tracing.load_full() else {
            return Vec::new();
        };
        vec![
            family(&self.exported, stats.exported()),
            family(&self.dropped, stats.dropped()),
        ]
    }
}
