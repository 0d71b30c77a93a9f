//! Glue between the proxy phases and the cache and compression modules.

use super::context::RequestCtx;
use super::forwarding;
use crate::cache::Scheme;
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
    ctx.accepts_gzip = chosen
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii() == b"gzip");
    ctx.accept_encoding = Some(req.remove_header(&ACCEPT_ENCODING));
    if req.insert_header(ACCEPT_ENCODING, chosen).is_err() {
        return;
    }
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_level(policy.level);
        // br is encoded by `BrotliStream` and gzip decoded by `Inflate` (see there): the
        // module only compresses gzip and zstd.
        c.adjust_algorithm_level(Algorithm::Brotli, 0);
        c.adjust_decompression(false);
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

/// Turns the cache on for GET and HEAD on caching routes, unless the request carries input
/// the key does not cover: a body, or an override header left after `scrub_untrusted`.
pub fn enable(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) {
    let (Some(store), Some(rc)) = (
        &runtime.cache,
        ctx.route.and_then(|r| runtime.route_cache[r].as_ref()),
    ) else {
        return;
    };
    let req = session.req_header();
    if !(req.method == Method::GET || req.method == Method::HEAD)
        || forwarding::has_unkeyed_override(req)
    {
        return;
    }
    ctx.cookie_request = rc.cookies_bypass && req.headers.contains_key(http::header::COOKIE);
    if !session.is_body_empty() {
        return;
    }
    store.enable(&mut session.cache);
}

/// A hit that a cookie-carrying request may not be served (the stored response is not
/// explicitly shared) is turned into a miss.
pub fn hit_allowed(runtime: &Runtime, meta: &pingora_cache::CacheMeta, ctx: &RequestCtx) -> bool {
    match &runtime.cache {
        Some(store) if ctx.cookie_request => {
            crate::cache::is_shared(meta.response_header(), &store.targeted)
        }
        _ => true,
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
    if let (Some(rc), Some(store)) = (&runtime.route_cache[route], &runtime.cache) {
        let label = if session.cache.enabled() {
            crate::cache::status_label(&session.cache.phase())
        } else {
            "BYPASS"
        };
        ctx.cache_status = Some(label);
        resp.insert_header("X-Cache-Status", HeaderValue::from_static(label))?;
        // The gateway's own targeted field is for the gateway, not for caches further down.
        resp.remove_header(&store.targeted);
        if rc.invalidate_on_unsafe {
            invalidate_after_unsafe(store, session, resp, ctx).await;
        }
    }
    if let (true, Some(policy)) = (ctx.compressing, &runtime.route_compression[route]) {
        let head = session.req_header().method == Method::HEAD;
        let inflate = policy.decompress
            && !ctx.accepts_gzip
            && !head
            && !matches!(resp.status.as_u16(), 204 | 206 | 304)
            && !resp.status.is_informational()
            && resp
                .headers
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if inflate {
            start_inflate(policy, resp, ctx)?;
        } else if policy.allows(resp, head) {
            lowercase_content_type(resp);
            if ctx.wants_br && !resp.headers.contains_key(http::header::CONTENT_ENCODING) {
                start_brotli(policy, resp, ctx)?;
            }
        }
        if inflate || !policy.allows(resp, head) {
            // Pingora's module leaves the body alone: decoded gzip is never re-encoded.
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(0);
            }
        }
    }
    Ok(())
}

/// RFC 9111 section 4.4: a successful unsafe request (any method that is not safe, unknown
/// ones included) invalidates the target URL and the same-host `Location` and
/// `Content-Location`.
async fn invalidate_after_unsafe(
    store: &crate::cache::CacheStore,
    session: &Session,
    resp: &ResponseHeader,
    ctx: &RequestCtx,
) {
    let req = session.req_header();
    if req.method.is_safe() || !(200..400).contains(&resp.status.as_u16()) {
        return;
    }
    let host = ctx.host.as_ref().map_or("", |h| h.as_str());
    let scheme = Scheme::of(ctx.tls);
    let mut targets = vec![(
        Some(scheme),
        req.uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string()),
    )];
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(u) = resp
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<http::Uri>().ok())
        else {
            continue;
        };
        let Some(pq) = u.path_and_query() else {
            continue;
        };
        match (u.scheme_str(), u.authority()) {
            (None, None) => targets.push((Some(scheme), pq.as_str().to_string())),
            (Some(s), Some(a)) => {
                let (target_scheme, port) = match s {
                    "https" => (Scheme::Https, 443),
                    "http" => (Scheme::Http, 80),
                    _ => continue,
                };
                let same_host = crate::edge::target::normalize_host(a.as_str().as_bytes(), port)
                    .is_ok_and(|n| n.rewritten.as_deref().unwrap_or(a.as_str()) == host);
                if same_host {
                    targets.push((Some(target_scheme), pq.as_str().to_string()));
                }
            }
            _ => {}
        }
    }
    for (scheme, t) in &targets {
        store.purge_url(*scheme, host, t).await;
        // A route with `key.ignore_query` stores the path alone: invalidate that entry too.
        if let Some((path, _)) = t.split_once('?') {
            store.purge_url(*scheme, host, path).await;
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

/// The headers of a body the gateway re-codes as it streams: its length is unknown, ranges
/// no longer apply, a strong validator becomes weak (RFC 9110 8.8.3: the bytes differ), and
/// the response depends on `Accept-Encoding`.
fn recoded_headers(resp: &mut ResponseHeader) -> Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::ACCEPT_RANGES);
    resp.append_header(http::header::VARY, "Accept-Encoding")?;
    let weak = resp
        .headers
        .get(http::header::ETAG)
        .filter(|e| !e.as_bytes().starts_with(b"W/"))
        .and_then(|e| HeaderValue::from_bytes(&[b"W/", e.as_bytes()].concat()).ok());
    if let Some(w) = weak {
        resp.insert_header(http::header::ETAG, w)?;
    }
    Ok(())
}

/// Switches the response to br: headers now, body in [`encode_body`].
fn start_brotli(
    policy: &crate::compression::CompressionPolicy,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    recoded_headers(resp)?;
    resp.insert_header(http::header::CONTENT_ENCODING, "br")?;
    ctx.brotli = Some(Box::new(crate::compression::BrotliStream::new(
        policy.level,
    )));
    Ok(())
}

/// Switches a gzip response to identity for a client that does not accept gzip: headers
/// now, body in [`encode_body`], bounded by `max_decompressed_bytes`.
fn start_inflate(
    policy: &crate::compression::CompressionPolicy,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    recoded_headers(resp)?;
    resp.remove_header(&http::header::CONTENT_ENCODING);
    // HTTP/1.1 streams it chunked (Pingora drops the header on HTTP/2 and for HTTP/1.0).
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    ctx.inflate = Some(Box::new(crate::compression::Inflate::new(
        policy.max_decompressed_bytes,
    )));
    Ok(())
}

/// Decodes the body of a gzip response switched to identity ([`start_inflate`]). Past a
/// bound the response is cut off: the error aborts it, so an HTTP/1.1 client sees no final
/// chunk and an HTTP/2 client a reset stream; an HTTP/1.0 client's body is close-delimited,
/// so for it a cut cannot be told from the end. Before any byte went out it is a 502.
pub fn inflate_body(
    body: &mut Option<bytes::Bytes>,
    end: bool,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), crate::compression::InflateError> {
    let Some(dec) = ctx.inflate.as_mut() else {
        return Ok(());
    };
    let out = dec.push(body.as_deref().unwrap_or(&[]), end)?;
    *body = Some(out);
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
