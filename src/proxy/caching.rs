//! Glue between the proxy phases and the response cache: when it is used, revalidation,
//! `X-Cache-Status`, and invalidation after unsafe methods.

use super::context::RequestCtx;
use super::forwarding;
use crate::cache::Scheme;
use crate::runtime::Runtime;
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderValue, Method};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

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
        ctx.route.and_then(|r| runtime.route(r).cache.as_ref()),
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
    let route = runtime.route(route);
    if let (Some(rc), Some(store)) = (&route.cache, &runtime.cache) {
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
