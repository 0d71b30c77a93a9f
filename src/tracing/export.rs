//! Finished spans to the collector: a bounded queue filled by the request path, emptied in
//! batches by one background task.
//!
//! The SDK's `BatchSpanProcessor` runs its own thread and does not expose how many spans it
//! dropped, so the gateway has its own processor: [`QueueProcessor::on_end`] does a
//! `try_send` (a full queue drops the span and counts it, never waits), and [`ExportLoop`]
//! sends a batch when it is full or `scheduled_delay_ms` after its first span, on whatever
//! tokio runtime runs it (a Pingora background service, see [`super::Tracer::service`]).

use super::client::PingoraClient;
use crate::config::TracingConfig;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

/// Export counters, read by `/metrics` and `/status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans lost: queue full, or their export failed.
    pub dropped: AtomicU64,
}

impl Stats {
    /// Spans exported so far.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The SDK span processor: queues every finished (sampled) span without waiting.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: Sender<SpanData>,
    stats: Arc<Stats>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // Dropping the sender (with the provider) is what ends the export loop.
        Ok(())
    }
}

/// The exporting side, until a runtime picks it up.
pub struct ExportLoop {
    rx: Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    stats: Arc<Stats>,
    batch_size: usize,
    delay: Duration,
    endpoint: String,
}

/// Builds the queue: the processor for the SDK, and the loop that drains it.
pub fn pipeline(
    cfg: &TracingConfig,
    resource: &Resource,
    stats: Arc<Stats>,
) -> Result<(QueueProcessor, ExportLoop), String> {
    let (tx, rx) = channel(cfg.max_queue_size.get());
    let timeout = Duration::from_millis(cfg.export_timeout_ms.max(1));
    let endpoint = cfg.otlp_endpoint.0.to_string();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint.clone())
        .with_timeout(timeout)
        .with_http_client(PingoraClient::new(timeout))
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    exporter.set_resource(resource);
    Ok((
        QueueProcessor {
            tx,
            stats: stats.clone(),
        },
        ExportLoop {
            rx,
            exporter,
            stats,
            batch_size: cfg
                .max_export_batch_size
                .get()
                .min(cfg.max_queue_size.get()),
            delay: Duration::from_millis(cfg.scheduled_delay_ms),
            endpoint,
        },
    ))
}

/// Shared start-once slot for the loop: whichever runtime asks first runs it.
pub type Pending = Mutex<Option<ExportLoop>>;

impl ExportLoop {
    /// Runs until every sender is gone (the tracer was replaced or dropped) or `stop` fires;
    /// what is queued then is exported before returning.
    pub async fn run(mut self, mut stop: impl std::future::Future<Output = ()> + Unpin) {
        let mut batch: Vec<SpanData> = Vec::with_capacity(self.batch_size);
        let mut due: Option<tokio::time::Instant> = None;
        let mut last_warning: Option<Instant> = None;
        loop {
            let deadline = due.unwrap_or_else(|| tokio::time::Instant::now() + self.delay);
            tokio::select! {
                span = self.rx.recv() => match span {
                    Some(span) => {
                        due.get_or_insert(tokio::time::Instant::now() + self.delay);
                        batch.push(span);
                        if batch.len() >= self.batch_size {
                            self.export(&mut batch, &mut last_warning).await;
                            due = None;
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline), if due.is_some() => {
                    self.export(&mut batch, &mut last_warning).await;
                    due = None;
                }
                _ = &mut stop => break,
            }
        }
        // Shutting down: what is already queued goes out, in batches.
        while let Ok(span) = self.rx.try_recv() {
            batch.push(span);
            if batch.len() >= self.batch_size {
                self.export(&mut batch, &mut last_warning).await;
            }
        }
        self.export(&mut batch, &mut last_warning).await;
    }

    async fn export(&self, batch: &mut Vec<SpanData>, last_warning: &mut Option<Instant>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        let n = spans.len() as u64;
        match self.exporter.export(spans).await {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                // A collector that is down fails every batch: say so once a minute, not each time.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    log::warn!(
                        "tracing: exporting {n} spans to {} failed: {e}",
                        self.endpoint
                    );
                    *last_warning = Some(Instant::now());
                }
            }
        }
    }
}
