//! Per-request state carried through the proxy phases.

use crate::upstream::InflightGuard;
use http::HeaderValue;
use std::time::Instant;

/// The proxy's per-request context (`ProxyHttp::CTX`).
pub struct RequestCtx {
    /// When the request arrived.
    pub started: Instant,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Index of the route's upstream.
    pub upstream: Option<usize>,
    /// Slot of the backend currently used.
    pub backend: Option<usize>,
    /// Backends already tried by this request (grows only on retries).
    pub tried: Vec<usize>,
    /// The request id, forwarded upstream and returned downstream.
    pub request_id: Option<HeaderValue>,
    /// Original Host, for `X-Forwarded-Host`.
    pub host: Option<HeaderValue>,
    /// Holds the backend's in-flight count up while the request uses it.
    pub inflight: Option<InflightGuard>,
}

impl RequestCtx {
    /// A context for a new request.
    pub fn new() -> Self {
        RequestCtx {
            started: Instant::now(),
            route: None,
            upstream: None,
            backend: None,
            tried: Vec::new(),
            request_id: None,
            host: None,
            inflight: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
