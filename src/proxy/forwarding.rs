//! Rewrites the request sent upstream: path, Host, `X-Forwarded-*` and `X-Request-Id`.

use super::context::RequestCtx;
use http::header::{HeaderName, HOST};
use http::HeaderValue;
use pingora_error::{OrErr, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The request id header, forwarded upstream and returned downstream.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    backend_host: &str,
) -> Result<()> {
    // The client's host, from the downstream request (HTTP/2 carries it in the authority).
    let client_host = request_host(session.req_header());
    if !preserve_host {
        req.insert_header(HOST, backend_host)?;
    } else if !req.headers.contains_key(HOST) {
        if let Some(h) = client_host {
            req.insert_header(HOST, h)?;
        }
    }
    if let Some(ip) = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
    {
        let ip = ip.to_string();
        // Every incoming X-Forwarded-For line is kept, in order, and the peer appended.
        let mut v: Vec<u8> = Vec::with_capacity(64);
        for prev in req.headers.get_all(&X_FORWARDED_FOR) {
            if !prev.is_empty() {
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
            }
        }
        v.extend_from_slice(ip.as_bytes());
        let xff = HeaderValue::from_bytes(&v).or_err(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "bad X-Forwarded-For",
        )?;
        req.insert_header(X_FORWARDED_FOR.clone(), xff)?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    req.insert_header(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    )?;
    if let Some(h) = client_host {
        req.insert_header(X_FORWARDED_HOST.clone(), h)?;
    }
    if let Some(id) = &ctx.request_id {
        req.insert_header(X_REQUEST_ID.clone(), id.clone())?;
    }
    Ok(())
}
