//! Rewrites the request sent upstream: path, Host, `X-Forwarded-*` and `X-Request-Id`.

use super::context::RequestCtx;
use http::header::{HeaderName, HOST};
use http::HeaderValue;
use pingora_error::{OrErr, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The request id header, forwarded upstream and returned downstream.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Request-Id` as written on the wire (see [`upstream_headers`] for why a `&str`).
pub const X_REQUEST_ID_NAME: &str = "X-Request-Id";

/// The request's host: the Host header, or the URI authority (HTTP/2).
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
}

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

/// Sets Host (unless preserved), the `X-Forwarded-*` headers and the request id.
pub fn upstream_headers(
    session: &Session,
    req: &mut RequestHeader,
    ctx: &RequestCtx,
    preserve_host: bool,
    backend_host: &HeaderValue,
) -> Result<()> {
    // Names are passed as `&'static str` and values as clones of already-built (shared)
    // values: every `insert_header` re-parses its name, and a `HeaderName` argument would
    // also be copied into Pingora's case map first.
    let client_host = client_host_value(session.req_header());
    if !preserve_host {
        req.insert_header(HOST, backend_host.clone())?;
    } else if !req.headers.contains_key(HOST) {
        if let Some(h) = &client_host {
            req.insert_header(HOST, h.clone())?;
        }
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let xff = forwarded_for(req, ip)?;
        req.insert_header("X-Forwarded-For", xff)?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    req.insert_header(
        "X-Forwarded-Proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    )?;
    if let Some(h) = client_host {
        req.insert_header("X-Forwarded-Host", h)?;
    }
    if let Some(id) = &ctx.request_id {
        req.insert_header(X_REQUEST_ID_NAME, id.clone())?;
    }
    Ok(())
}

/// `X-Forwarded-For`: every incoming line kept, in order, and `ip` appended; the address is
/// rendered on the stack, not into a `String`.
fn forwarded_for(req: &RequestHeader, ip: std::net::IpAddr) -> Result<HeaderValue> {
    use std::io::Write;
    let mut ip_buf = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut ip_buf[..]);
    // An IPv6 address is at most 45 characters, so this cannot run out of room.
    write!(cursor, "{ip}").or_err(pingora_error::ErrorType::InternalError, "rendering IP")?;
    let len = cursor.position() as usize;
    let ip = &ip_buf[..len];
    let mut previous = req
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter(|v| !v.is_empty())
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

/// The client's Host as a header value: its `Host` header (shared, not copied), else the
/// request line's authority (HTTP/2 carries it there).
fn client_host_value(req: &RequestHeader) -> Option<HeaderValue> {
    match req.headers.get(HOST) {
        Some(h) => Some(h.clone()),
        None => req
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}
