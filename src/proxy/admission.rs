//! Edge admission, the first thing every request goes through (`early_request_filter`): the
//! request target and Host are checked and normalized once, and the request header is
//! rewritten into that normal form, so routing, the cache key, `strip_prefix`, forwarding and
//! the request sent upstream all read the same path and the same host.

use super::context::{EffectiveHost, Rejection, RequestCtx};
use crate::edge::{path, target, PathPolicy, Target};
use crate::routing::{Action, RouteId};
use crate::runtime::Runtime;
use http::header::HOST;
use http::{HeaderValue, Method, Version};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::borrow::Cow;

/// A request the gateway answers itself before any route policy runs.
pub struct Refusal {
    /// The status sent.
    pub status: u16,
    /// The plain-text body.
    pub body: Cow<'static, str>,
    /// Whether the connection is closed after it (the framing cannot be trusted).
    pub close: bool,
    /// How it is counted and logged.
    pub decision: Rejection,
}

impl Refusal {
    fn no_route() -> Refusal {
        Refusal {
            status: 404,
            body: "no route\n".into(),
            close: false,
            decision: Rejection::NoRoute,
        }
    }

    fn bad(status: u16, body: impl Into<Cow<'static, str>>) -> Option<Refusal> {
        Some(Refusal {
            status,
            body: body.into(),
            close: true,
            decision: Rejection::BadRequest,
        })
    }
}

/// The request's route, or why it is refused before its route's plugins and limits run, in
/// order: what [`admit`] refused, framing problems, `PURGE` on a public listener, no route,
/// and a dot-segment on a `strip_prefix` route when paths are not normalized.
pub fn route(runtime: &Runtime, session: &Session, ctx: &RequestCtx) -> Result<RouteId, Refusal> {
    refusal(runtime, session, ctx).map_or_else(
        // refusal() refuses every request without a route.
        || ctx.route.ok_or_else(Refusal::no_route),
        Err,
    )
}

fn refusal(runtime: &Runtime, session: &Session, ctx: &RequestCtx) -> Option<Refusal> {
    if let Some(reason) = ctx.refused {
        return Refusal::bad(400, format!("bad request: {reason}\n"));
    }
    if let Some((status, body)) =
        super::framing::problem(session, runtime.downstream.max_header_bytes)
    {
        return Refusal::bad(status, body);
    }
    if session.req_header().method.as_str() == "PURGE" {
        // Purging is an admin-listener operation only.
        return Some(Refusal {
            status: 405,
            body: "method not allowed\n".into(),
            close: false,
            decision: Rejection::BadRequest,
        });
    }
    let Some(route) = ctx.route.map(|r| runtime.route(r)) else {
        return Some(Refusal::no_route());
    };
    let stripped = matches!(
        route.action,
        Action::Proxy {
            strip_prefix: Some(_),
            ..
        }
    );
    if stripped
        && !runtime.downstream.paths.normalize
        && path::has_dot_segment(session.req_header().uri.path().as_bytes())
    {
        // Without normalization nothing resolves `..`, and a stripped path must never climb
        // out of its prefix.
        return Refusal::bad(400, "bad request: dot-segment in path\n");
    }
    None
}

/// The route for the admitted (normalized) request, from the normalized host and path.
///
/// A CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is matched
/// with the method it asks about, so it finds the route the real request will take even
/// when that route lists its methods.
pub fn find_route(runtime: &Runtime, session: &Session, ctx: &RequestCtx) -> Option<RouteId> {
    let req = session.req_header();
    let find = |method: &Method| {
        runtime
            .table
            .find(
                ctx.host.as_ref().map(EffectiveHost::name),
                req.uri.path(),
                method,
                &req.headers,
            )
            .map(|r| r.id)
    };
    let asked = (req.method == Method::OPTIONS && req.headers.contains_key(http::header::ORIGIN))
        .then(|| req.headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    // Only a route that answers preflights takes one by the method it asks about; otherwise
    // the OPTIONS is routed as any OPTIONS is, so `methods:` stays an allowlist.
    asked
        .and_then(|m| find(&m))
        .filter(|r| runtime.route(*r).plugins.answers_preflights())
        .or_else(|| find(&req.method))
}

/// Checks and normalizes the request; on refusal returns the reason for the 400 body.
pub fn admit(
    session: &mut Session,
    ctx: &mut RequestCtx,
    paths: &PathPolicy,
) -> Result<(), &'static str> {
    ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let default_port = if ctx.tls { 443 } else { 80 };
    let req = session.req_header();
    let target = target::parse_target(req.raw_path(), req.method == Method::OPTIONS)
        .map_err(|e| e.as_str())?;
    let host = effective_host(req, &target, default_port).map_err(|e| e.as_str())?;
    let new_path = match target {
        Target::Asterisk => None,
        _ => path::normalize(target.path(), paths).map_err(|e| e.as_str())?,
    };
    let absolute = matches!(target, Target::Absolute { .. });
    if new_path.is_some() || absolute {
        let path = match &new_path {
            Some(p) => p.as_bytes(),
            None => target.path(),
        };
        let rebuilt = rebuild_uri(req, path, target.query()).ok_or("invalid request target")?;
        let req = session.req_header_mut();
        req.set_uri(rebuilt);
    }
    if let Some(h) = &host {
        // HTTP/1 carries the host in `Host`; make it the normalized one (absolute-form
        // without `Host` gets one). HTTP/2 keeps `:authority`: forwarding sets `Host` from
        // the effective host and Pingora reconciles the upstream authority with it.
        let req = session.req_header_mut();
        if req.version != Version::HTTP_2 && req.headers.get(HOST) != Some(&h.value) {
            req.insert_header(HOST, h.value.clone())
                .map_err(|_| "invalid host")?;
        }
    }
    ctx.host = host;
    Ok(())
}

/// The one host the request is for: the absolute-form authority (or `:authority`), else
/// `Host`; both normalized, and refused when they disagree.
fn effective_host(
    req: &RequestHeader,
    target: &Target<'_>,
    default_port: u16,
) -> Result<Option<EffectiveHost>, target::TargetError> {
    let header = req.headers.get(HOST);
    if header.is_none() && req.version == Version::HTTP_11 {
        return Err(target::TargetError::MissingHost);
    }
    let authority = target
        .authority()
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    let from_header = header
        .map(|h| normalized(h.as_bytes(), Some(h), default_port))
        .transpose()?;
    let from_authority = authority
        .map(|a| normalized(a, None, default_port))
        .transpose()?;
    match (from_header, from_authority) {
        (Some(h), Some(a)) if h.value != a.value => Err(target::TargetError::HostMismatch),
        (h, a) => Ok(a.or(h)),
    }
}

/// A normalized host; `original` is reused (not copied) when it is already normal.
fn normalized(
    raw: &[u8],
    original: Option<&HeaderValue>,
    default_port: u16,
) -> Result<EffectiveHost, target::TargetError> {
    let n = target::normalize_host(raw, default_port)?;
    let value = match (n.rewritten, original) {
        (Some(text), _) => {
            HeaderValue::from_str(&text).map_err(|_| target::TargetError::BadHost)?
        }
        (None, Some(v)) => v.clone(),
        (None, None) => HeaderValue::from_bytes(raw).map_err(|_| target::TargetError::BadHost)?,
    };
    Ok(EffectiveHost {
        value,
        name_len: n.name_len,
    })
}

/// The request URI with a new path: origin-form for HTTP/1, scheme and authority kept for
/// HTTP/2 (whose URI carries `:scheme` and `:authority`).
fn rebuild_uri(req: &RequestHeader, path: &[u8], query: Option<&[u8]>) -> Option<http::Uri> {
    let mut pq = Vec::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    pq.extend_from_slice(path);
    if let Some(q) = query {
        pq.push(b'?');
        pq.extend_from_slice(q);
    }
    let pq = http::uri::PathAndQuery::try_from(pq).ok()?;
    let mut parts = http::uri::Parts::default();
    if req.version == Version::HTTP_2 {
        parts.scheme = req.uri.scheme().cloned();
        parts.authority = req.uri.authority().cloned();
    }
    parts.path_and_query = Some(pq);
    http::Uri::from_parts(parts).ok()
}
