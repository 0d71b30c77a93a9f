//! Per-request state carried through the proxy phases.

use super::protection::RateInfo;
use crate::metrics::RouteInFlight;
use crate::policy::ConcurrencyGuard;
use crate::upstream::{Admission, InflightGuard};
use http::HeaderValue;
use std::net::IpAddr;
use std::time::{Duration, Instant};

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
    /// Holds the backend's in-flight count up while the request uses it.
    pub inflight: Option<InflightGuard>,
    /// The client IP (the peer, or from `X-Forwarded-For` behind trusted proxies).
    pub client_ip: Option<IpAddr>,
    /// The rate-limit decision, kept to render `RateLimit-*` on the response.
    pub rate: Option<RateInfo>,
    /// Holds the route's `max_in_flight` slot while the request runs.
    pub route_slot: Option<ConcurrencyGuard>,
    /// The circuit breaker's decision for this request.
    pub admission: Option<Admission>,
    /// Status of the upstream's response header, once it arrived.
    pub upstream_status: Option<u16>,
    /// The backend whose connect failure was already charged to passive health.
    pub connect_failed: Option<usize>,
    /// The client's own `Accept-Encoding`, held while the compression module sees the
    /// negotiated one (outer `Some` = replaced; inner = the original value, if any).
    pub accept_encoding: Option<Option<HeaderValue>>,
    /// Whether compression is on for this request.
    pub compressing: bool,
    /// Whether br was negotiated (the gateway encodes br itself).
    pub wants_br: bool,
    /// The br encoder, once the response was switched to br (boxed: it is 5.6 KB and rare,
    /// and the context is moved inside Pingora's per-request futures).
    pub brotli: Option<Box<crate::compression::BrotliStream>>,
    /// Bytes into and out of the br encoder, once it finished (for metrics).
    pub br_bytes: Option<(u64, u64)>,
    /// A revalidation's 304 header, merged into the stored response.
    pub revalidation: Option<Box<pingora_http::ResponseHeader>>,
    /// The `X-Cache-Status` sent, for logs.
    pub cache_status: Option<&'static str>,
    /// Whether the upstream outcome has been reported to the breaker and passive health.
    pub outcome_recorded: bool,
    /// Why the gateway answered by itself, when it refused the request.
    pub decision: Option<Rejection>,
    /// Holds the route's in-flight gauge up while the request runs.
    pub route_inflight: Option<RouteInFlight>,
    /// When the first upstream peer was chosen (connects and retries count as upstream time).
    pub upstream_started: Option<Instant>,
    /// Upstream time until its response header arrived.
    pub upstream_duration: Option<Duration>,
}

/// Why the gateway refused a request itself, for metrics and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The route's rate limit.
    RateLimited,
    /// The upstream's circuit breaker.
    CircuitOpen,
    /// The route's `max_in_flight` cap.
    InFlightCap,
    /// No route matched.
    NoRoute,
    /// Malformed or oversized request framing.
    BadRequest,
}

impl Rejection {
    /// The access log's `decision` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::RateLimited => "rate_limited",
            Rejection::CircuitOpen => "circuit_open",
            Rejection::InFlightCap => "in_flight_cap",
            Rejection::NoRoute => "no_route",
            Rejection::BadRequest => "bad_request",
        }
    }
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
            inflight: None,
            client_ip: None,
            rate: None,
            route_slot: None,
            admission: None,
            upstream_status: None,
            connect_failed: None,
            accept_encoding: None,
            compressing: false,
            wants_br: false,
            brotli: None,
            br_bytes: None,
            cache_status: None,
            revalidation: None,
            outcome_recorded: false,
            decision: None,
            route_inflight: None,
            upstream_started: None,
            upstream_duration: None,
        }
    }
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self::new()
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn context_stays_small() {
        // Pingora moves the context through its per-request futures, and the whole future
        // is copied into a fresh box for every request: a 5.6 KB br encoder held inline once
        // cost 22k instructions per request in memcpy alone (docs/performance.md).
        assert!(std::mem::size_of::<super::RequestCtx>() <= 512);
    }
}
