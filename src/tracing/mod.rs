//! OpenTelemetry tracing: W3C Trace Context in and out ([`context`]), a server span per
//! request and a client span per upstream attempt ([`span`]), exported over OTLP/HTTP in
//! batches from a background task with a bounded queue ([`export`], [`client`]).
//!
//! [`Tracer`] is the gateway's own handle (no global tracer provider): built from the
//! `tracing:` section without touching the network or a runtime, held by the runtime as an
//! `Arc`, and kept across a reload while its section is unchanged ([`attach`]).

mod client;
pub mod context;
mod export;
pub mod span;

pub use export::Stats;
pub use span::{Finished, RequestTrace};

use crate::config::{ConfigError, KeyPath, TracingConfig};
use async_trait::async_trait;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::ServiceWithDependents;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The tracer and its exporter, built from one `tracing:` section.
pub struct Tracer {
    config: TracingConfig,
    sdk: SdkTracer,
    /// Kept for its lifetime: the loop ends (after a last export) when the provider, and with
    /// it the queue's sender, is gone, including every span still held by a request.
    _provider: SdkTracerProvider,
    stats: Arc<Stats>,
    pending: export::Pending,
    /// Set once something runs (or will run) the export loop, so requests stop looking.
    exporting: AtomicBool,
}

impl Tracer {
    /// Builds the tracer and its (not yet running) export loop; no I/O.
    pub fn build(cfg: &TracingConfig) -> Result<Tracer, ConfigError> {
        let at = |k: &str| KeyPath::root().key("tracing").key(k);
        if cfg.service_name.trim().is_empty() {
            return Err(ConfigError::at(&at("service_name"), "must not be empty"));
        }
        let resource = Resource::builder_empty()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let stats = Arc::new(Stats::default());
        let (processor, export_loop) = export::pipeline(cfg, &resource, stats.clone())
            .map_err(|m| ConfigError::at(&at("otlp_endpoint"), m))?;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio.0,
            ))))
            .with_resource(resource)
            .build();
        let sdk = provider.tracer("avx-gateway");
        Ok(Tracer {
            config: cfg.clone(),
            sdk,
            _provider: provider,
            stats,
            pending: std::sync::Mutex::new(Some(export_loop)),
            exporting: AtomicBool::new(false),
        })
    }

    /// The section this tracer was built from.
    pub fn config(&self) -> &TracingConfig {
        &self.config
    }

    /// Export counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Starts a request's trace from its headers (a valid `traceparent` is its parent).
    pub fn start(&self, headers: &http::HeaderMap, method: &http::Method) -> Box<RequestTrace> {
        if !self.exporting.load(Ordering::Relaxed) {
            self.start_export_here();
        }
        Box::new(RequestTrace::start(&self.sdk, headers, method))
    }

    /// Runs the export loop on the current tokio runtime: the fallback for a tracer that no
    /// background service runs (one built by a reload, after the services started).
    #[cold]
    fn start_export_here(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.exporting.store(true, Ordering::Relaxed);
        if let Some(export_loop) = self.take_loop() {
            tokio::spawn(export_loop.run(std::future::pending()));
        }
    }

    fn take_loop(&self) -> Option<export::ExportLoop> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The Pingora background service that runs the export loop in the serving process.
    ///
    /// The service takes the loop, not the tracer: a tracer replaced by a reload is then
    /// dropped with its last request, which ends the loop (after a last export).
    pub fn service(&self) -> Box<dyn ServiceWithDependents> {
        self.exporting.store(true, Ordering::Relaxed);
        let export_loop = std::sync::Mutex::new(self.take_loop());
        let mut svc = background_service("tracing export", ExportService(export_loop));
        svc.threads = Some(1);
        Box::new(svc)
    }
}

struct ExportService(export::Pending);

#[async_trait]
impl BackgroundService for ExportService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(export_loop) = taken else {
            return;
        };
        let stop = Box::pin(async move {
            let _ = shutdown.changed().await;
        });
        export_loop.run(stop).await;
    }
}

/// The tracer for a (new) runtime: `previous` itself when its section is unchanged (its queue,
/// connections and counters carry on), else a new one, or none when tracing is off. The
/// metrics read its counters once the runtime goes live.
pub fn attach(
    previous: Option<&Arc<Tracer>>,
    cfg: &TracingConfig,
) -> Result<Option<Arc<Tracer>>, ConfigError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let tracer = match previous.filter(|t| t.config() == cfg) {
        Some(t) => t.clone(),
        None => Arc::new(Tracer::build(cfg)?),
    };
    Ok(Some(tracer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::runtime::Runtime;

    fn runtime(yaml: &str) -> Runtime {
        let cfg: Config = serde_yaml::from_str(yaml).unwrap();
        Runtime::build(&cfg, &Default::default(), None).unwrap()
    }

    const TRACED: &str = "tracing: { enabled: true, sample_ratio: 1 }\n";

    #[test]
    fn builds_without_a_runtime_and_a_reload_keeps_it_while_unchanged() {
        // A plain thread, no tokio runtime: what start-up and a reload's spawn_blocking see.
        let first = runtime(TRACED);
        let kept = first.tracing.as_ref().unwrap();
        let same: TracingConfig =
            serde_yaml::from_str("{ enabled: true, sample_ratio: 1 }").unwrap();
        let again = attach(Some(kept), &same).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(kept, &again),
            "an unchanged section keeps the tracer"
        );
        let changed: TracingConfig =
            serde_yaml::from_str("{ enabled: true, sample_ratio: 0.5 }").unwrap();
        let other = attach(Some(kept), &changed).unwrap().unwrap();
        assert!(!Arc::ptr_eq(kept, &other));
        let off = TracingConfig::default();
        assert!(attach(Some(kept), &off).unwrap().is_none());
        let text = String::from_utf8(first.metrics.encode()).unwrap();
        assert!(text.contains("avx_tracing_spans_dropped_total 0"), "{text}");
    }

    #[test]
    fn an_unsampled_request_still_has_ids_to_propagate() {
        let rt = runtime("tracing: { enabled: true, sample_ratio: 0 }\n");
        let tracer = rt.tracing.as_ref().unwrap();
        let mut trace = tracer.start(&http::HeaderMap::new(), &http::Method::GET);
        assert!(!trace.sampled());
        assert_ne!(trace.trace_id(), "00000000000000000000000000000000");
        let mut req = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
        trace.begin_attempt(
            &http::Method::GET,
            &"pool".into(),
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.1",
        );
        trace.inject(&mut req).unwrap();
        let tp = req.headers.get("traceparent").unwrap().to_str().unwrap();
        assert!(tp.starts_with(&format!("00-{}-", trace.trace_id())), "{tp}");
        assert!(tp.ends_with("-00"), "{tp}");
        assert_eq!(tracer.stats().dropped(), 0);
    }

    #[tokio::test]
    async fn the_export_loop_ends_with_its_tracer() {
        let rt = runtime(TRACED);
        let tracer = rt.tracing.clone().unwrap();
        drop(rt);
        let export_loop = tracer.take_loop().unwrap();
        let running = tokio::spawn(export_loop.run(std::future::pending()));
        drop(tracer);
        tokio::time::timeout(std::time::Duration::from_secs(5), running)
            .await
            .expect("the loop ends once the tracer is gone")
            .unwrap();
    }
}
