//! The proxy's side of tracing: reads the session and the request context for
//! [`crate::tracing`]. Every function is a no-op unless the request is traced.

use super::context::{Rejection, RequestCtx};
use crate::runtime::Runtime;
use crate::tracing::Finished;
use crate::upstream::{Admission, BackendSlot, Upstream};
use pingora_error::Error;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Starts the request's trace, when tracing is on.
pub fn start(runtime: &Runtime, session: &Session, ctx: &mut RequestCtx) {
    if let Some(tracer) = &runtime.tracing {
        let req = session.req_header();
        ctx.trace = Some(tracer.start(&req.headers, &req.method));
    }
}

/// Opens the span of an upstream attempt on `backend`.
pub fn attempt(up: &Upstream, backend: &BackendSlot, session: &Session, ctx: &mut RequestCtx) {
    let Some(trace) = ctx.trace.as_deref_mut() else {
        return;
    };
    let host = host_name(backend.host_header().as_bytes());
    trace.begin_attempt(&session.req_header().method, &up.name, backend.addr, host);
}

/// Ends the open attempt after a failed connect.
pub fn connect_failed(ctx: &mut RequestCtx, e: &Error) {
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.attempt_failed(e.etype().as_str());
    }
}

/// Records the upstream's status on the open attempt.
pub fn upstream_status(ctx: &mut RequestCtx, status: u16) {
    if let Some(trace) = ctx.trace.as_deref_mut() {
        trace.attempt_status(status);
    }
}

/// Sends the attempt's `traceparent` (and `tracestate`) upstream.
pub fn inject(ctx: &RequestCtx, req: &mut RequestHeader) -> pingora_error::Result<()> {
    match ctx.trace.as_deref() {
        Some(trace) => trace.inject(req),
        None => Ok(()),
    }
}

/// Ends the request's spans with what the request came to.
pub fn finish(runtime: &Runtime, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    let Some(trace) = ctx.trace.take() else {
        return;
    };
    if !trace.sampled() {
        // Nothing is recorded: dropping the spans is all there is to do.
        return;
    }
    let req = session.req_header();
    let status = session.response_written().map_or(0, |h| h.status.as_u16());
    let host = ctx.host.as_ref().map(|h| {
        let port = h
            .as_str()
            .get(h.name_len + 1..)
            .and_then(|p| p.parse().ok());
        (h.name(), port)
    });
    trace.finish(&Finished {
        method: &req.method,
        path: req.uri.path(),
        scheme: if ctx.tls { "https" } else { "http" },
        status,
        host,
        client_ip: ctx.client_ip,
        peer: session.client_addr().and_then(|a| a.as_inet()).copied(),
        route: ctx.route.map(|r| &runtime.route(r).name),
        upstream: ctx.upstream.map(|u| &runtime.upstream(u).name),
        cache_status: ctx.cache_status,
        decision: ctx.decision.map(Rejection::as_str),
        breaker: ctx.admission.map(|a| match a {
            Admission::Allowed => "allowed",
            Admission::Probe => "probe",
            Admission::Rejected { .. } => "rejected",
        }),
        // A rejection keeps no `Decision` (its headers are written at once), only the reason.
        rate_limit: ctx
            .rate
            .as_ref()
            .map(|d| (d.allowed, d.remaining))
            .or((ctx.decision == Some(Rejection::RateLimited)).then_some((false, 0))),
        error: e.map(|e| e.etype().as_str()),
        request_id: ctx.request_id.as_ref().map(|v| v.as_bytes()),
    });
}

/// The name part of a `Host` value: no port, no IPv6 brackets.
fn host_name(host: &[u8]) -> &str {
    let host = std::str::from_utf8(host).unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}
