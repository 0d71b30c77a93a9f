//! The end of every request (the `logging` hook): metrics, and the access log line when enabled.

use super::context::{Rejection, RequestCtx};
use super::failure::Failure;
use crate::access_log::LogEntry;
use crate::metrics::{CacheEvent, ErrorKind, RequestSample};
use crate::runtime::Runtime;
use crate::upstream::Admission;
use http::header::{HOST, REFERER, USER_AGENT};
use http::Version;
use pingora_core::modules::http::compression::ResponseCompression;
use pingora_error::Error;
use pingora_proxy::Session;
use std::time::{Duration, SystemTime};

/// Records the finished request.
pub fn finish(runtime: &Runtime, session: &Session, e: Option<&Error>, ctx: &RequestCtx) {
    let status = session.response_written().map_or(0, |h| h.status.as_u16());
    let duration = ctx.started.elapsed();
    // A request that failed before the upstream's header counts the time until it failed.
    let upstream_duration = ctx
        .upstream_duration
        .or_else(|| ctx.upstream_started.map(|t| t.elapsed()));
    let m = &runtime.metrics;
    m.record(&RequestSample {
        route: ctx.route,
        method: &session.req_header().method,
        status,
        duration,
        upstream: ctx.upstream.zip(upstream_duration),
        error: error_kind(ctx, e, status),
        rate_limited: ctx.decision == Some(Rejection::RateLimited),
    });
    if let Some(c) = &ctx.consumer {
        m.record_consumer(ctx.route, c.label());
    }
    if let Some(event) = ctx.cache_status.and_then(cache_event) {
        m.record_cache(event);
    }
    if ctx.compressing {
        let info = session
            .downstream_modules_ctx
            .get::<ResponseCompression>()
            .and_then(|c| c.get_info());
        if let Some((algorithm, bytes_in, bytes_out, _)) = info {
            m.record_compression(algorithm, bytes_in as u64, bytes_out as u64);
        }
        // br is encoded by the gateway itself, outside Pingora's module.
        if let Some((bytes_in, bytes_out)) = ctx.br_bytes {
            m.record_compression("br", bytes_in, bytes_out);
        }
    }
    if let Some(log) = &runtime.access_log {
        log.log(&entry(
            runtime,
            session,
            ctx,
            status,
            duration,
            upstream_duration,
        ));
    }
}

/// The one error kind a request is counted under: the gateway's own refusal first, then the
/// proxy error, then an upstream 5xx.
fn error_kind(ctx: &RequestCtx, e: Option<&Error>, status: u16) -> Option<ErrorKind> {
    if let Some(d) = ctx.decision {
        return Some(match d {
            Rejection::RateLimited | Rejection::InFlightCap => ErrorKind::RateLimited,
            Rejection::CircuitOpen => ErrorKind::CircuitOpen,
            Rejection::NoRoute => ErrorKind::NoRoute,
            Rejection::BadRequest => ErrorKind::BadRequest,
            Rejection::Unauthorized => ErrorKind::Unauthorized,
            Rejection::Forbidden => ErrorKind::Forbidden,
            // A redirect or preflight answer is not an error.
            Rejection::PluginAnswered => return None,
            // Like a plugin's auth service: a dependency of the gateway could not be reached.
            Rejection::PluginUnavailable | Rejection::RateLimitUnavailable => ErrorKind::Connect,
        });
    }
    if let Some(kind) = e.and_then(|e| Failure::of(e, ctx).metric_kind(status)) {
        return Some(kind);
    }
    ctx.upstream_status
        .filter(|s| (500..600).contains(s))
        .map(|_| ErrorKind::Upstream5xx)
}

/// The cache counter for an `X-Cache-Status` value (BYPASS counts nowhere).
fn cache_event(status: &str) -> Option<CacheEvent> {
    match status {
        "HIT" | "REVALIDATED" => Some(CacheEvent::Hit),
        "MISS" | "EXPIRED" => Some(CacheEvent::Miss),
        "STALE" => Some(CacheEvent::Stale),
        _ => None,
    }
}

fn entry<'a>(
    runtime: &'a Runtime,
    session: &'a Session,
    ctx: &'a RequestCtx,
    status: u16,
    duration: Duration,
    upstream_duration: Option<Duration>,
) -> LogEntry<'a> {
    let req = session.req_header();
    let upstream = ctx.upstream.map(|u| runtime.upstream(u));
    // After a failed attempt the backend moves to `tried` but its guard stays until the next
    // pick: the guard's backend is the last one tried.
    let backend = ctx.inflight.as_ref().map(|g| g.slot().addr);
    let header = |name| {
        req.headers
            .get(name)
            .map(|v: &http::HeaderValue| v.as_bytes())
    };
    LogEntry {
        time: SystemTime::now(),
        request_id: ctx.request_id.as_ref().map(|v| v.as_bytes()),
        client_ip: ctx.client_ip.or_else(|| {
            session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip())
        }),
        method: req.method.as_str(),
        host: header(HOST).or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes())),
        path: req
            .uri
            .path_and_query()
            .map_or_else(|| req.uri.path(), |p| p.as_str()),
        protocol: protocol(req.version),
        status,
        bytes: session.body_bytes_sent(),
        duration,
        route: ctx.route.map(|r| &*runtime.route(r).name),
        upstream: upstream.map(|u| &*u.name),
        upstream_addr: upstream.and(backend),
        upstream_duration,
        cache_status: ctx.cache_status,
        decision: ctx
            .decision
            .map(Rejection::as_str)
            .or_else(|| (ctx.admission == Some(Admission::Probe)).then_some("circuit_probe")),
        consumer: ctx.consumer.as_ref().map(|c| &*c.name),
        referer: header(REFERER),
        user_agent: header(USER_AGENT),
        trace_id: ctx.trace.as_deref().map(|t| t.trace_id()),
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}
