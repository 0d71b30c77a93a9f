//! Glue between the proxy phases and the cache and compression modules.

use super::context::RequestCtx;
use super::forwarding;
use crate::runtime::Runtime;
use http::header::{ACCEPT_ENCODING, CONTENT_LOCATION, LOCATION};
use http::{HeaderValue, Method};
use pingora_core::modules::http::compression::ResponseCompression;
use pingora_core::protocols::http::compression::Algorithm;
use pingora_error::{OrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Before Pingora's compression module reads the request: show it only the negotiated
/// coding and turn it on at the route's level. The original header is restored by
/// [`restore_accept_encoding`] so the cache and the upstream see what the client sent.
pub fn prepare_compression(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) {
    let Some(policy) = ctx
        .route
        .and_then(|r| runtime.route_compression[r].as_ref())
    else {
        return;
    };
    let req = session.req_header_mut();
    let chosen = policy.negotiate(req.headers.get(ACCEPT_ENCODING));
    ctx.wants_br = chosen.as_bytes().starts_with(b"br");
    ctx.accept_encoding = Some(req.remove_header(&ACCEPT_ENCODING));
    if req.insert_header(ACCEPT_ENCODING, chosen).is_err() {
        return;
    }
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_level(policy.level);
        // br is encoded by `BrotliStream` (see there); the module only passes br through.
        c.adjust_algorithm_level(Algorithm::Brotli, 0);
        c.adjust_decompression(policy.decompress);
    }
    ctx.compressing = true;
}

/// Puts the client's own `Accept-Encoding` back after the compression module has read it.
pub fn restore_accept_encoding(session: &mut Session, ctx: &mut RequestCtx) {
    if let Some(original) = ctx.accept_encoding.take() {
        let req = session.req_header_mut();
        req.remove_header(&ACCEPT_ENCODING);
        if let Some(v) = original {
            // A value that was valid on arrival is valid again.
            let _ = req.insert_header(ACCEPT_ENCODING, v);
        }
    }
}

/// Keeps a revalidation's 304 headers: Pingora merges only a few of them into the stored
/// response, RFC 9111 section 4.3.4 wants them all.
pub fn note_revalidation(session: &Session, resp: &ResponseHeader, ctx: &mut RequestCtx) {
    if resp.status.as_u16() == 304 && session.cache.enabled() {
        ctx.revalidation = Some(Box::new(resp.clone()));
    }
}

/// The stored response updated with a revalidation's 304 headers, when there was one.
pub fn merge_revalidation(stored: &ResponseHeader, ctx: &mut RequestCtx) -> Option<ResponseHeader> {
    let fresh = ctx.revalidation.take()?;
    // The 304 describes the stored body; its framing headers do not.
    let framing = |n: &http::HeaderName| {
        matches!(
            n.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "content-encoding"
        )
    };
    let mut merged = stored.clone();
    for name in fresh.headers.keys().filter(|n| !framing(n)) {
        merged.remove_header(name);
    }
    for (name, value) in fresh.headers.iter().filter(|(n, _)| !framing(n)) {
        // Names and values came from a parsed header, so they are valid again.
        let _ = merged.append_header(name.clone(), value.clone());
    }
    Some(merged)
}

/// Turns the cache on for GET and HEAD on caching routes.
pub fn enable(runtime: &Runtime, session: &mut Session, ctx: &RequestCtx) {
    let (Some(store), Some(route)) = (&runtime.cache, ctx.route) else {
        return;
    };
    if runtime.route_cache[route].is_none() {
        return;
    }
    let m = &session.req_header().method;
    if *m == Method::GET || *m == Method::HEAD {
        store.enable(&mut session.cache);
    }
}

/// Response-phase work: the cache status header, whether this response may be compressed,
/// and invalidation after a successful unsafe request.
pub async fn on_response(
    runtime: &Runtime,
    session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let Some(route) = ctx.route else {
        return Ok(());
    };
    if runtime.route_cache[route].is_some() {
        let label = if session.cache.enabled() {
            crate::cache::status_label(&session.cache.phase())
        } else {
            "BYPASS"
        };
        ctx.cache_status = Some(label);
        resp.insert_header("X-Cache-Status", HeaderValue::from_static(label))?;
        invalidate_after_unsafe(runtime, session, resp).await;
    }
    if ctx.compressing {
        let head = session.req_header().method == Method::HEAD;
        let allowed = runtime.route_compression[route]
            .as_ref()
            .is_some_and(|p| p.allows(resp, head));
        if allowed {
            lowercase_content_type(resp);
            if ctx.wants_br && !resp.headers.contains_key(http::header::CONTENT_ENCODING) {
                start_brotli(runtime, route, resp, ctx)?;
            }
        } else {
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(0);
                c.adjust_decompression(false);
            }
        }
    }
    Ok(())
}

/// RFC 9111 section 4.4: a successful unsafe request invalidates the target URL and the
/// same-host `Location` and `Content-Location`.
async fn invalidate_after_unsafe(runtime: &Runtime, session: &Session, resp: &ResponseHeader) {
    let req = session.req_header();
    if req.method.is_safe() || !(200..400).contains(&resp.status.as_u16()) {
        return;
    }
    let Some(store) = &runtime.cache else { return };
    let host = forwarding::request_host(req).unwrap_or("");
    let mut targets = vec![req
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string())];
    for name in [LOCATION, CONTENT_LOCATION] {
        if let Some(v) = resp.headers.get(name).and_then(|v| v.to_str().ok()) {
            match v.parse::<http::Uri>() {
                Ok(u) if u.host().is_none() || u.host() == Some(host) => {
                    if let Some(pq) = u.path_and_query() {
                        targets.push(pq.as_str().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    for t in &targets {
        store.purge_url(host, t).await;
        // A route with `key.ignore_query` stores the path alone: invalidate that entry too.
        if let Some((path, _)) = t.split_once('?') {
            store.purge_url(host, path).await;
        }
    }
}

/// Media types are case-insensitive, but Pingora's own content-type check is not.
fn lowercase_content_type(resp: &mut ResponseHeader) {
    let lower = match resp.headers.get(http::header::CONTENT_TYPE) {
        Some(ct) if ct.as_bytes().iter().any(u8::is_ascii_uppercase) => {
            HeaderValue::from_bytes(&ct.as_bytes().to_ascii_lowercase()).ok()
        }
        _ => None,
    };
    if let Some(v) = lower {
        let _ = resp.insert_header(http::header::CONTENT_TYPE, v);
    }
}

/// Switches the response to br: headers now, body in [`encode_body`].
fn start_brotli(
    runtime: &Runtime,
    route: usize,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let Some(policy) = runtime.route_compression[route].as_ref() else {
        return Ok(());
    };
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.insert_header(http::header::CONTENT_ENCODING, "br")?;
    resp.append_header(http::header::VARY, "Accept-Encoding")?;
    // RFC 9110 8.8.3: the encoded bytes differ, so a strong validator becomes weak.
    let weak = resp
        .headers
        .get(http::header::ETAG)
        .filter(|e| !e.as_bytes().starts_with(b"W/"))
        .and_then(|e| HeaderValue::from_bytes(&[b"W/", e.as_bytes()].concat()).ok());
    if let Some(w) = weak {
        resp.insert_header(http::header::ETAG, w)?;
    }
    ctx.brotli = Some(Box::new(crate::compression::BrotliStream::new(
        policy.level,
    )));
    Ok(())
}

/// Encodes the body when the response was switched to br.
pub fn encode_body(body: &mut Option<bytes::Bytes>, end: bool, ctx: &mut RequestCtx) -> Result<()> {
    let Some(enc) = ctx.brotli.as_mut() else {
        return Ok(());
    };
    let mut out = match body.as_deref() {
        Some(chunk) if !chunk.is_empty() => enc
            .push(chunk)
            .or_err(pingora_error::ErrorType::InternalError, "brotli encoding")?
            .to_vec(),
        _ => Vec::new(),
    };
    if end {
        if let Some(enc) = ctx.brotli.take() {
            let (rest, bytes_in, bytes_out) = enc.finish();
            out.extend_from_slice(&rest);
            ctx.br_bytes = Some((bytes_in, bytes_out));
        }
    }
    *body = Some(bytes::Bytes::from(out));
    Ok(())
}
