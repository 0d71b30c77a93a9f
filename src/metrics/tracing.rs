//! Tracing export counters, read at scrape time from the tracer's atomics (the tracer may
//! outlive this runtime's registry across a reload, so nothing is copied into it).

use crate::tracing::Stats;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Metric, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::Arc;

/// `avx_tracing_spans_exported_total` and `avx_tracing_spans_dropped_total`.
pub(super) struct TracingCollector {
    stats: Arc<Stats>,
    exported: Desc,
    dropped: Desc,
}

impl TracingCollector {
    /// A collector over these counters.
    pub(super) fn new(stats: Arc<Stats>) -> prometheus::Result<TracingCollector> {
        let desc = |name: &str, help: &str| {
            Desc::new(name.into(), help.into(), Vec::new(), HashMap::new())
        };
        Ok(TracingCollector {
            stats,
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
        vec![
            family(&self.exported, self.stats.exported()),
            family(&self.dropped, self.stats.dropped()),
        ]
    }
}
