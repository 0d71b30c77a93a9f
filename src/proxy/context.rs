//! Per-request state carried through the proxy phases.

use crate::metrics::RouteInFlight;
use crate::plugin::Consumer;
use crate::policy::{ConcurrencyGuard, Decision};
use crate::routing::RouteId;
use crate::runtime::Runtime;
use crate::upstream::{Admission, BackendSlot, InflightGuard, UpstreamId};
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy's per-request context (`ProxyHttp::CTX`).
pub struct RequestCtx {
    /// The runtime live when the request started; it finishes on it whatever reloads happen.
    pub runtime: Arc<Runtime>,
    /// When the request arrived.
    pub started: Instant,
    /// The matched route.
    pub route: Option<RouteId>,
    /// The upstream the request goes to (the route's, or its split's pick).
    pub upstream: Option<UpstreamId>,
    /// Id ([`crate::upstream::BackendSlot::id`]) of the backend currently used.
    pub backend: Option<usize>,
    /// Ids of the backends already tried by this request (grows only on retries).
    pub tried: Vec<usize>,
    /// The request id, forwarded upstream and returned downstream.
    pub request_id: Option<HeaderValue>,
    /// The normalized host the request is for (none for HTTP/1.0 without `Host`).
    pub host: Option<EffectiveHost>,
    /// Whether the client connection is TLS (the request's scheme is `https`).
    pub tls: bool,
    /// Whether the TCP peer is in `trusted_proxies` (its forwarding headers are believed).
    pub peer_trusted: bool,
    /// The request carries `Cookie` on a `cookies: bypass` route: only explicitly shared
    /// responses may be served to it from the cache or stored from it.
    pub cookie_request: bool,
    /// Why edge admission refused the request (answered with 400 in `request_filter`).
    pub refused: Option<&'static str>,
    /// Holds the backend's in-flight count up while the request uses it.
    pub inflight: Option<InflightGuard>,
    /// The client IP (the peer, or from `X-Forwarded-For` behind trusted proxies).
    pub client_ip: Option<IpAddr>,
    /// The rate-limit decision, kept to render `RateLimit-*` on the response.
    pub rate: Option<Decision>,
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
    /// Whether the client accepts gzip (otherwise gzip from the upstream is decoded).
    pub accepts_gzip: bool,
    /// The gzip decoder, once a gzip response was switched to identity (boxed like `brotli`).
    pub inflate: Option<Box<crate::compression::Inflate>>,
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
    /// The authenticated consumer, set by an authentication plugin.
    pub consumer: Option<Consumer>,
    /// An authentication plugin admitted the request: caches treat it as authorized.
    pub authenticated: bool,
    /// A sticky split's `Set-Cookie`, for a client that had no (valid) side cookie (boxed:
    /// rare, and the context is moved inside Pingora's per-request futures).
    pub split_cookie: Option<Box<HeaderValue>>,
    /// Whether this request's mirror copy was considered (once, not per retry).
    pub mirror_started: bool,
    /// Feeds the request body to its mirror copy (boxed: only on mirrored routes).
    pub mirror_tap: Option<Box<crate::upstream::BodyTap>>,
    /// The request's spans, when tracing is on (boxed: the context stays small).
    pub trace: Option<Box<crate::tracing::RequestTrace>>,
}

/// The request's host in normal form: lowercase, no trailing dot, no default port.
pub struct EffectiveHost {
    /// `name[:port]`, as forwarded in `Host` and `X-Forwarded-Host`.
    pub value: HeaderValue,
    /// Length of the name within `value`.
    pub name_len: usize,
}

impl EffectiveHost {
    /// `name[:port]`.
    pub fn as_str(&self) -> &str {
        // Normalized hosts are ASCII.
        std::str::from_utf8(self.value.as_bytes()).unwrap_or("")
    }

    /// The name without its port, as routes match it.
    pub fn name(&self) -> &str {
        self.as_str().get(..self.name_len).unwrap_or("")
    }
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
    /// Malformed or oversized request framing, or a path a plugin could not rewrite.
    BadRequest,
    /// An authentication plugin refused the request.
    Unauthorized,
    /// An access plugin denied the request.
    Forbidden,
    /// A plugin answered by itself (a redirect, a CORS preflight).
    PluginAnswered,
    /// A plugin could not decide (e.g. its auth service is down).
    PluginUnavailable,
    /// A `scope: cluster` rate limit could not reach Redis and fails closed.
    RateLimitUnavailable,
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
            Rejection::Unauthorized => "unauthorized",
            Rejection::Forbidden => "forbidden",
            Rejection::PluginAnswered => "plugin_answered",
            Rejection::PluginUnavailable => "plugin_unavailable",
            Rejection::RateLimitUnavailable => "rate_limit_unavailable",
        }
    }
}

impl RequestCtx {
    /// A context for a new request served by `runtime`.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        RequestCtx {
            runtime,
            started: Instant::now(),
            route: None,
            upstream: None,
            backend: None,
            tried: Vec::new(),
            request_id: None,
            host: None,
            tls: false,
            peer_trusted: false,
            cookie_request: false,
            refused: None,
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
            accepts_gzip: false,
            inflate: None,
            brotli: None,
            br_bytes: None,
            cache_status: None,
            revalidation: None,
            outcome_recorded: false,
            decision: None,
            route_inflight: None,
            upstream_started: None,
            upstream_duration: None,
            consumer: None,
            authenticated: false,
            split_cookie: None,
            mirror_started: false,
            mirror_tap: None,
            trace: None,
        }
    }

    /// The backend currently used: the one the in-flight guard holds, while `backend` names it.
    pub fn current_backend(&self) -> Option<&BackendSlot> {
        let guard = self.inflight.as_ref()?;
        (self.backend == Some(guard.slot().id)).then(|| &**guard.slot())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_stays_small() {
        // Pingora moves the context through its per-request futures, and the whole future
        // is copied into a fresh box for every request: a 5.6 KB br encoder held inline once
        // cost 22k instructions per request in memcpy alone (docs/performance.md).
        let size = std::mem::size_of::<super::RequestCtx>();
        assert!(size <= 512, "RequestCtx is {size} bytes");
    }
}
