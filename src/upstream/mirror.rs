//! `routes[].mirror`: a copy of each request (or a share of them) to a shadow upstream, whose
//! answer is read and dropped.
//!
//! The copy runs in its own task and the request never waits for it: the body is handed over
//! through a bounded channel with `try_send`, so a slow or dead shadow makes the copy stop,
//! never the request. Copies in flight are capped; beyond the cap they are dropped and counted.

use super::Upstream;
use bytes::Bytes;
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Longest a copy may take from connect to the end of its answer.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(10);
/// Body chunks buffered for a copy before it is given up (the request never waits).
const BODY_QUEUE: usize = 16;

/// The outcome counters of one route's mirror (`avx_mirror_requests_total{route, result}`).
#[derive(Clone)]
pub struct MirrorCounters {
    /// Copies that got a complete answer.
    pub sent: IntCounter,
    /// Copies not made: over `max_in_flight`, or no healthy backend.
    pub dropped: IntCounter,
    /// Copies that failed: connect, timeout, a body too large or too slow to hand over.
    pub failed: IntCounter,
}

/// A compiled `mirror:`.
pub struct Mirror {
    upstream: Arc<Upstream>,
    percent: u64,
    max_in_flight: usize,
    max_body: usize,
    in_flight: Arc<AtomicUsize>,
    seen: AtomicU64,
    connector: Arc<Connector>,
    counters: MirrorCounters,
}

/// Hands a request's body over to its copy.
pub struct BodyTap {
    tx: Option<mpsc::Sender<Option<Bytes>>>,
    sent: usize,
    max: usize,
}

impl BodyTap {
    /// Offers one body chunk (`end` after the last); never waits.
    pub fn offer(&mut self, chunk: Option<&Bytes>, end: bool) {
        let Some(tx) = &self.tx else {
            return;
        };
        let mut ok = true;
        if let Some(c) = chunk.filter(|c| !c.is_empty()) {
            self.sent += c.len();
            ok = self.sent <= self.max && tx.try_send(Some(c.clone())).is_ok();
        }
        if ok && end {
            ok = tx.try_send(None).is_ok();
            self.tx = None;
        }
        if !ok {
            // Dropping the sender ends the copy unfinished: it is abandoned (and counted as
            // failed by its task), never sent short.
            self.tx = None;
        }
    }
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Mirror {
    /// A mirror to `upstream` of `percent` of the requests.
    pub fn new(
        upstream: Arc<Upstream>,
        cfg: &crate::config::MirrorConfig,
        counters: MirrorCounters,
    ) -> Mirror {
        Mirror {
            upstream,
            percent: u64::from(cfg.percent.min(100)),
            max_in_flight: cfg.max_in_flight,
            max_body: cfg.max_body_bytes,
            in_flight: Arc::new(AtomicUsize::new(0)),
            seen: AtomicU64::new(0),
            connector: Arc::new(Connector::new(None)),
            counters,
        }
    }

    /// Starts a copy of `req` (the request as sent upstream), when this request is in the
    /// mirrored share and a slot is free. With `has_body`, the returned tap must be fed the
    /// body.
    pub fn start(&self, req: &RequestHeader, has_body: bool) -> Option<BodyTap> {
        // Request n takes position n * 37 % 100 (37 is coprime to 100): exactly `percent` of
        // every 100 requests, spread over them rather than in a run (no random source).
        let n = self.seen.fetch_add(1, Ordering::Relaxed);
        if (n.wrapping_mul(37) % 100) >= self.percent {
            return None;
        }
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.inc();
            return None;
        }
        let slot = Slot(self.in_flight.clone());
        let Some(backend) = self.upstream.select(&[], &[]) else {
            self.counters.dropped.inc();
            return None;
        };
        let peer = self.upstream.peer(&backend);
        let copy = req.clone();
        let (tx, rx) = if has_body {
            let (tx, rx) = mpsc::channel(BODY_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let connector = self.connector.clone();
        let counters = self.counters.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let run = send_copy(&connector, &peer, copy, rx);
            match tokio::time::timeout(COPY_TIMEOUT, run).await {
                Ok(Ok(())) => counters.sent.inc(),
                Ok(Err(e)) => {
                    log::debug!("mirror copy failed: {e}");
                    counters.failed.inc();
                }
                Err(_) => counters.failed.inc(),
            }
        });
        Some(BodyTap {
            tx,
            sent: 0,
            max: self.max_body,
        })
    }
}

async fn send_copy(
    connector: &Connector,
    peer: &pingora_core::upstreams::peer::HttpPeer,
    req: RequestHeader,
    body: Option<mpsc::Receiver<Option<Bytes>>>,
) -> pingora_error::Result<()> {
    use pingora_error::{Error, ErrorType};
    let (mut session, _) = connector.get_http_session(peer).await?;
    session.write_request_header(Box::new(req)).await?;
    if let Some(mut rx) = body {
        loop {
            match rx.recv().await {
                Some(Some(chunk)) => session.write_request_body(chunk, false).await?,
                Some(None) => break,
                None => {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "the request body was not handed over in full",
                    )
                }
            }
        }
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    while session.read_response_body().await?.is_some() {}
    connector
        .release_http_session(session, peer, peer.options.idle_timeout)
        .await;
    Ok(())
}
