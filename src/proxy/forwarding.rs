//! Rewrites the request sent upstream: path, Host, `X-Forwarded-*` and `X-Request-Id`, and
//! removes what an untrusted peer may not assert.

use super::context::RequestCtx;
use super::header_names::{
    FORWARDED_FOR, FORWARDED_HOST, FORWARDED_PORT, FORWARDED_PROTO, REQUEST_ID,
};
use crate::config::ForwardedFor;
use crate::runtime::Runtime;
use http::header::HOST;
use http::HeaderValue;
use pingora_error::{OrErr, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Removes `prefix` from the path, keeping a leading `/` and the query.
pub fn strip_prefix(req: &mut RequestHeader, prefix: &str) -> Result<()> {
    let path = req.uri.path();
    let Some(rest) = path.strip_prefix(prefix.trim_end_matches('/')) else {
        return Ok(());
    };
    let mut new =
        String::with_capacity(rest.len() + 1 + req.uri.query().map_or(0, |q| q.len() + 1));
    if !rest.starts_with('/') {
        new.push('/');
    }
    new.push_str(rest);
    if let Some(q) = req.uri.query() {
        new.push('?');
        new.push_str(q);
    }
    let uri = new.parse::<http::Uri>().or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "rewriting path",
    )?;
    req.set_uri(uri);
    Ok(())
}

/// Drops the query from the upstream request (routes whose cache key ignores it).
pub fn strip_query(req: &mut RequestHeader) -> Result<()> {
    if req.uri.query().is_none() {
        return Ok(());
    }
    let path = req.uri.path().to_string();
    let mut parts = http::uri::Parts::default();
    parts.scheme = req.uri.scheme().cloned();
    parts.authority = req.uri.authority().cloned();
    parts.path_and_query = Some(path.parse().or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "rewriting path",
    )?);
    let uri = http::Uri::from_parts(parts).or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "rewriting path",
    )?;
    req.set_uri(uri);
    Ok(())
}

/// Headers a client could use to make an origin or a cache believe something about the
/// request that the gateway did not decide: removed from a peer outside `trusted_proxies`
/// (the `X-Forwarded-*` ones are then set by [`upstream_headers`] from the gateway's own view).
const PEER_ASSERTED: [&str; 9] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-scheme",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
];

/// Inputs that change what an origin answers without being part of the cache key: a request
/// that still carries one after [`scrub_untrusted`] bypasses the cache.
const UNKEYED_OVERRIDES: [&str; 7] = [
    "x-forwarded-scheme",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Removes the [`PEER_ASSERTED`] headers of a request from an untrusted peer. One pass over
/// the names first, so a clean request (the common case) costs no lookups.
pub fn scrub_untrusted(req: &mut RequestHeader) {
    // Every name in the list starts with `f` or `x`: most headers are ruled out by one byte.
    let dirty = req.headers.keys().any(|k| {
        matches!(k.as_str().as_bytes().first(), Some(b'f' | b'x'))
            && PEER_ASSERTED.contains(&k.as_str())
    });
    if dirty {
        for name in PEER_ASSERTED {
            req.remove_header(name);
        }
    }
}

/// Whether the request carries an override the cache key does not cover.
pub fn has_unkeyed_override(req: &RequestHeader) -> bool {
    req.headers
        .keys()
        .any(|k| UNKEYED_OVERRIDES.contains(&k.as_str()))
}

/// Sets Host (the effective host, or the backend's), the `X-Forwarded-*` headers and the
/// request id. A trusted proxy's `X-Forwarded-Proto`/`-Host`/`-Port` are kept; an untrusted
/// peer's were removed by [`scrub_untrusted`], so the gateway's own values go out.
pub fn upstream_headers(
    session: &Session,
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    preserve_host: bool,
    backend_host: &HeaderValue,
    runtime: &Runtime,
) -> Result<()> {
    // Names are parsed once (see `header_names`), values are clones of already-built
    // (shared) values.
    match (preserve_host, &ctx.host) {
        (true, Some(h)) => req.insert_header(HOST, h.value.clone())?,
        // HTTP/1.0 without Host: the request goes upstream as HTTP/1.1, which needs one.
        _ => req.insert_header(HOST, backend_host.clone())?,
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let keep_incoming =
            ctx.peer_trusted || runtime.downstream.forwarded_for == ForwardedFor::Append;
        let xff = forwarded_for_value(req, ip, keep_incoming)?;
        FORWARDED_FOR.set_on_request(req, xff)?;
    }
    if !req.headers.contains_key(FORWARDED_PROTO.name()) {
        FORWARDED_PROTO.set_on_request(
            req,
            HeaderValue::from_static(if ctx.tls { "https" } else { "http" }),
        )?;
    }
    if !req.headers.contains_key(FORWARDED_HOST.name()) {
        if let Some(h) = &ctx.host {
            FORWARDED_HOST.set_on_request(req, h.value.clone())?;
        }
    }
    if !req.headers.contains_key(FORWARDED_PORT.name()) {
        if let Some(port) = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
        {
            // Rendered once per listener; a port not in the config is rendered here.
            let value = runtime
                .listener_ports
                .iter()
                .find(|(p, _)| *p == port)
                .map_or_else(|| HeaderValue::from(port), |(_, v)| v.clone());
            FORWARDED_PORT.set_on_request(req, value)?;
        }
    }
    if let Some(id) = &ctx.request_id {
        REQUEST_ID.set_on_request(req, id.clone())?;
    }
    Ok(())
}

/// `X-Forwarded-For`: `ip`, after every incoming line (in order) when `keep_incoming`; the
/// address is rendered on the stack, not into a `String`.
fn forwarded_for_value(
    req: &RequestHeader,
    ip: std::net::IpAddr,
    keep_incoming: bool,
) -> Result<HeaderValue> {
    use std::io::Write;
    let mut ip_buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut ip_buf[..]);
    // An IPv6 address is at most 45 characters, so this cannot run out of room.
    write!(cursor, "{ip}").or_err(pingora_error::ErrorType::InternalError, "rendering IP")?;
    let len = cursor.position() as usize;
    let ip = &ip_buf[..len];
    let mut previous = req
        .headers
        .get_all(FORWARDED_FOR.name())
        .iter()
        .filter(|v| keep_incoming && !v.is_empty())
        .peekable();
    let value = if previous.peek().is_none() {
        HeaderValue::from_bytes(ip)
    } else {
        let mut v: Vec<u8> = Vec::with_capacity(64);
        for prev in previous {
            v.extend_from_slice(prev.as_bytes());
            v.extend_from_slice(b", ");
        }
        v.extend_from_slice(ip);
        HeaderValue::from_bytes(&v)
    };
    value.or_err(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "bad X-Forwarded-For",
    )
}

/// Finds the client IP (the peer, or behind `trusted_proxies` from `X-Forwarded-For`) and, for
/// an untrusted peer, removes the forwarding headers it may not assert.
pub fn identify_client(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let trusted = &runtime.trusted_proxies;
    ctx.peer_trusted = trusted.trusts_peer(peer);
    ctx.client_ip = trusted.client_ip(peer, &session.req_header().headers);
    if !ctx.peer_trusted {
        scrub_untrusted(session.req_header_mut());
    }
}
