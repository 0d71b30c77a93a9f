//! Rate limits, concurrency caps and the circuit breaker, applied in `request_filter`, and the
//! reporting of upstream outcomes back to the breaker and passive health.

use super::context::{Rejection, RequestCtx};
use super::failure::Failure;
use super::header_names::{
    RATELIMIT_LIMIT, RATELIMIT_POLICY, RATELIMIT_REMAINING, RATELIMIT_RESET,
};
use super::respond;
use crate::policy::{now_us, ClusterLimit, Decision, LimitKey, RoutePolicy, Verdict};
use crate::routing::RouteId;
use crate::runtime::Runtime;
use crate::upstream::{Admission, Upstream};
use http::HeaderValue;
use pingora_error::{Error, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Whether the route's rate limit keys on the client (its IP, or its consumer), so charging a
/// refused request to it cannot spend a bucket other clients share.
pub fn limits_per_client(runtime: &Runtime, route: RouteId) -> bool {
    runtime
        .route(route)
        .guards
        .rate
        .as_ref()
        .is_some_and(|p| matches!(p.key, LimitKey::ClientIp | LimitKey::Consumer))
}

/// Applies the route's rate limit and concurrency cap; returns true when it answered.
pub async fn guard_route(
    runtime: &Runtime,
    route: RouteId,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let guards = &runtime.route(route).guards;
    if let Some(policy) = &guards.rate {
        // `known`: false when Redis could not say and failure_mode admitted the request; it
        // then carries no RateLimit-* figures, since nobody knows them.
        let (decision, known) = match &policy.cluster {
            None => (local_decision(policy, session, ctx), true),
            Some(limit) => match cluster_verdict(runtime, policy, limit, session, ctx).await {
                Verdict::Decided(d) => (d, true),
                Verdict::FailedOpen => (Decision::UNKNOWN_ADMITTED, false),
                Verdict::FailedClosed => {
                    ctx.decision = Some(Rejection::RateLimitUnavailable);
                    let mut h = ResponseHeader::build(503, Some(4))?;
                    h.insert_header("retry-after", "1")?;
                    respond::error_with(session, ctx, 503, "rate limit unavailable\n", false, h)
                        .await?;
                    return Ok(true);
                }
            },
        };
        if !decision.allowed {
            ctx.decision = Some(Rejection::RateLimited);
            let mut h = ResponseHeader::build(policy.status, Some(8))?;
            h.insert_header("retry-after", decision.retry_after_secs)?;
            insert_rate_headers(
                &mut h,
                &decision,
                &policy.limit_header,
                &policy.policy_header,
            )?;
            respond::error_with(
                session,
                ctx,
                policy.status,
                "rate limit exceeded\n",
                false,
                h,
            )
            .await?;
            return Ok(true);
        }
        if policy.headers && known {
            ctx.rate = Some(decision);
        }
    }
    if let Some(cap) = &guards.in_flight {
        match cap.try_acquire() {
            Some(slot) => ctx.route_slot = Some(slot),
            None => {
                ctx.decision = Some(Rejection::InFlightCap);
                let mut h = ResponseHeader::build(503, Some(4))?;
                h.insert_header("retry-after", "1")?;
                respond::error_with(session, ctx, 503, "too many requests in flight\n", false, h)
                    .await?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The local table's decision for this request's key.
fn local_decision(policy: &RoutePolicy, session: &Session, ctx: &RequestCtx) -> Decision {
    match &policy.key {
        LimitKey::ClientIp => policy
            .limiter
            .check(&ctx.client_ip.map(|ip| policy.client_key(ip))),
        LimitKey::Route => policy.limiter.check(&()),
        // Before authentication ran (or when it set no consumer) the client IP stands in,
        // so anonymous traffic still cannot flood the route.
        LimitKey::Consumer => match &ctx.consumer {
            Some(c) => policy.limiter.check(c.name.as_bytes()),
            None => policy
                .limiter
                .check(&ctx.client_ip.map(|ip| policy.client_key(ip))),
        },
        LimitKey::Header(name) => policy.limiter.check(
            session
                .req_header()
                .headers
                .get(name)
                .map_or(&[][..], |v| v.as_bytes()),
        ),
    }
}

/// Asks Redis (or the local shortcut) about this request's key, keyed like the local table;
/// the tag keeps a consumer named like an address apart from that address.
async fn cluster_verdict(
    runtime: &Runtime,
    policy: &RoutePolicy,
    limit: &ClusterLimit,
    session: &Session,
    ctx: &RequestCtx,
) -> Verdict {
    use std::io::Write;
    let redis = runtime.redis.as_deref();
    // An address as text, on the stack: the longest IPv6 form is 45 bytes.
    let mut ip_buf = [0u8; 48];
    let mut ip_text = |ip: Option<std::net::IpAddr>| -> usize {
        let Some(ip) = ip.map(|ip| policy.client_key(ip)) else {
            return 0;
        };
        let mut w = &mut ip_buf[..];
        match write!(w, "{ip}") {
            Ok(()) => 48 - w.len(),
            Err(_) => 0,
        }
    };
    match &policy.key {
        LimitKey::ClientIp => {
            let n = ip_text(ctx.client_ip);
            limit.check(redis, b"ip:", &ip_buf[..n]).await
        }
        LimitKey::Route => limit.check(redis, b"route", b"").await,
        LimitKey::Consumer => match &ctx.consumer {
            Some(c) => limit.check(redis, b"consumer:", c.name.as_bytes()).await,
            None => {
                let n = ip_text(ctx.client_ip);
                limit.check(redis, b"ip:", &ip_buf[..n]).await
            }
        },
        LimitKey::Header(name) => {
            let value = session
                .req_header()
                .headers
                .get(name)
                .map_or(&[][..], |v| v.as_bytes());
            limit.check(redis, b"header:", value).await
        }
    }
}

/// Asks the upstream's circuit breaker; returns true when it answered (circuit open).
pub async fn guard_upstream(
    up: &Upstream,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<bool> {
    let Some(breaker) = &up.breaker else {
        return Ok(false);
    };
    if breaker.probing(now_us()) {
        read_small_body(session).await?;
    }
    let admission = breaker.admit(now_us());
    ctx.admission = Some(admission);
    if let Admission::Rejected { retry_after_secs } = admission {
        ctx.decision = Some(Rejection::CircuitOpen);
        let mut h = ResponseHeader::build(503, Some(4))?;
        h.insert_header("retry-after", retry_after_secs)?;
        respond::error_with(session, ctx, 503, "upstream circuit open\n", false, h).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Largest request body read in full before a half-open probe slot is taken: what Pingora's
/// retry buffer holds, which replays it upstream.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Before a request may become a half-open probe, its body (when it has a known, small
/// length) is read in full, each read bounded by `client_body_timeout_ms`: a client that
/// stalls its body then fails with 408 here and never holds the probe slot. The bytes go
/// into Pingora's retry buffer, which is sent upstream first. A body of unknown or larger
/// length is streamed as usual (its slot is given back if it stalls; see `finish`).
async fn read_small_body(session: &mut Session) -> Result<()> {
    if session.is_body_done() {
        return Ok(());
    }
    let small = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= PROBE_BODY_LIMIT);
    if !small {
        return Ok(());
    }
    session.enable_retry_buffering();
    while session
        .read_request_body()
        .await
        .map_err(|e| e.into_down())?
        .is_some()
    {}
    Ok(())
}

/// Reports the request's upstream outcome once: to passive health (per backend) and the breaker.
pub fn record_outcome(up: &Upstream, ctx: &mut RequestCtx, status: Option<u16>) {
    if ctx.outcome_recorded {
        return;
    }
    ctx.outcome_recorded = true;
    // A connect failure was already charged to its backend in `fail_to_connect`.
    if let Some(slot) = ctx
        .current_backend()
        .filter(|s| ctx.connect_failed != Some(s.id))
    {
        let failed = status.is_none_or(|s| up.is_backend_failure_status(s));
        up.record_backend(slot, failed);
    }
    if let (Some(breaker), Some(admission)) = (&up.breaker, ctx.admission) {
        let failed = status.is_none_or(|s| breaker.is_failure_status(s));
        breaker.record(admission, failed, now_us());
    }
}

/// Notes the upstream's response status: a failure status is reported at once, so the very
/// next request already sees an opened circuit; a success waits for the body to finish.
pub fn response_started(up: &Upstream, ctx: &mut RequestCtx, status: u16) {
    ctx.upstream_status = Some(status);
    let failure = up.is_backend_failure_status(status)
        || up
            .breaker
            .as_ref()
            .is_some_and(|b| b.is_failure_status(status));
    if failure {
        record_outcome(up, ctx, Some(status));
    }
}

/// Settles the request at its end: a response that started well counts as a success unless the
/// upstream broke off mid-body (a reset or timeout then counts as a failure), and a half-open
/// probe that never reached the upstream gives its slot back.
pub fn finish(up: &Upstream, ctx: &mut RequestCtx, e: Option<&Error>) {
    if ctx.outcome_recorded {
        return;
    }
    let upstream_broke = e.is_some_and(|e| Failure::of(e, ctx).counts_against_backend());
    match ctx.upstream_status {
        Some(_) if upstream_broke => record_outcome(up, ctx, None),
        Some(status) => record_outcome(up, ctx, Some(status)),
        None => {
            if ctx.admission == Some(Admission::Probe) {
                if let Some(b) = &up.breaker {
                    b.abandon_probe();
                }
            }
        }
    }
}

/// Adds `RateLimit-*` headers for an admitted request, when the route sends them; the
/// pre-rendered values come from the route's policy, the decision from the context.
pub fn rate_headers(runtime: &Runtime, ctx: &RequestCtx, h: &mut ResponseHeader) -> Result<()> {
    let policy = ctx
        .route
        .and_then(|r| runtime.route(r).guards.rate.as_ref());
    match (&ctx.rate, policy) {
        (Some(d), Some(p)) => insert_rate_headers(h, d, &p.limit_header, &p.policy_header),
        _ => Ok(()),
    }
}

fn insert_rate_headers(
    h: &mut ResponseHeader,
    d: &Decision,
    limit: &HeaderValue,
    policy: &HeaderValue,
) -> Result<()> {
    RATELIMIT_LIMIT.set_on_response(h, limit.clone())?;
    RATELIMIT_POLICY.set_on_response(h, policy.clone())?;
    RATELIMIT_REMAINING.set_on_response(h, HeaderValue::from(d.remaining))?;
    RATELIMIT_RESET.set_on_response(h, HeaderValue::from(d.reset_secs))
}
