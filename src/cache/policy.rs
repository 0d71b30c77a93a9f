//! Shared-cache rules (RFC 9111) on top of pingora-cache's freshness helpers.

use super::RouteCache;
use http::header::{AGE, ETAG, LAST_MODIFIED, SET_COOKIE, VARY};
use http::HeaderName;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora_http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// RFC 9111 4.2.1: without max-age or s-maxage, the lifetime is `Expires - Date` (the
/// origin's clock on both sides), not `Expires - now` on ours.
fn expires_from_date(
    resp: &ResponseHeader,
    cc: Option<&CacheControl>,
    now: SystemTime,
) -> Option<SystemTime> {
    if cc.is_some_and(|c| c.fresh_duration().is_some()) {
        return None;
    }
    let parse = |name: http::header::HeaderName| {
        let mut values = resp.headers.get_all(name).iter();
        let v = values.next()?;
        if values.next().is_some() {
            return None;
        }
        httpdate::parse_http_date(v.to_str().ok()?).ok()
    };
    let expires = parse(http::header::EXPIRES)?;
    let date = parse(http::header::DATE)?;
    Some(now + expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// RFC 9110 7.6.1: headers named in `Connection` belong to that one hop and are not stored.
fn strip_connection_nominated(header: &mut ResponseHeader) {
    let named: Vec<String> = header
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty() && n != "close" && n != "keep-alive")
        .collect();
    for name in &named {
        header.remove_header(name.as_str());
    }
}

/// `CDN-Cache-Control` (RFC 9213), for every CDN-like shared cache.
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The cache directives that apply to this gateway: RFC 9213's target list, most specific
/// first (the gateway's own field, then `CDN-Cache-Control`); `Cache-Control` only when no
/// targeted field is present. A targeted field replaces `Cache-Control` entirely.
pub fn cache_control(resp: &ResponseHeader, targeted: &HeaderName) -> Option<CacheControl> {
    for name in [targeted, &CDN_CACHE_CONTROL] {
        if resp.headers.contains_key(name) {
            return CacheControl::from_resp_headers_named(name.as_str(), resp);
        }
    }
    CacheControl::from_resp_headers(resp)
}

/// Whether the response says it may be shared even with requests that carry credentials
/// (`public` or `s-maxage`).
pub fn is_shared(resp: &ResponseHeader, targeted: &HeaderName) -> bool {
    cache_control(resp, targeted).is_some_and(|c| c.public() || matches!(c.s_maxage(), Ok(Some(_))))
}

/// RFC 9111 §5.1, as the gateway reads it: `Age` is one non-negative integer; anything else
/// (a list, a sign, a fraction, garbage) makes the response stale. `None` when it is absent.
fn age(resp: &ResponseHeader) -> Option<Result<Duration, ()>> {
    let mut values = resp.headers.get_all(AGE).iter();
    let first = values.next()?;
    let v = first.as_bytes();
    if values.next().is_some() || v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Some(Err(()));
    }
    // 20 digits overflow u64; any such age is far past every lifetime anyway.
    let secs = std::str::from_utf8(v)
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    Some(Ok(Duration::from_secs(secs)))
}

/// Statuses a shared cache may store; others pass through.
fn storable_status(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether and for how long a response may be stored.
///
/// Beyond Pingora's checks (`no-store`, `private`, `Authorization`, `s-maxage` before
/// `max-age` before `Expires`): the directives come from the targeted field when there is one
/// ([`cache_control`]); `Vary: *` and `Set-Cookie` without `public` are never stored; a
/// request's `Cookie` (under `cookies: bypass`) is treated like `Authorization`: stored only
/// when the response is explicitly shared; the route's default TTL applies only to a 200 with
/// a validator; the origin's `Age` is subtracted, and an invalid `Age` makes the response
/// stale; freshness is capped at `ttl_cap`; `must-revalidate`/`proxy-revalidate` disable
/// serving stale.
pub fn cacheability(
    resp: &ResponseHeader,
    authorization: bool,
    cookie: bool,
    route: &RouteCache,
    ttl_cap: Duration,
    targeted: &HeaderName,
) -> RespCacheable {
    let status = resp.status.as_u16();
    if !storable_status(status) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    if resp.headers.get_all(VARY).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|p| p.trim_ascii() == b"*")
    }) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let cc = cache_control(resp, targeted);
    let public = cc.as_ref().is_some_and(|c| c.public());
    let shared = public
        || cc
            .as_ref()
            .is_some_and(|c| matches!(c.s_maxage(), Ok(Some(_))));
    if cookie && !shared {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    if resp.headers.contains_key(SET_COOKIE) && !public {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let defaults = CacheMetaDefaults::new(|_| None, route.swr_secs, route.sie_secs);
    let now = SystemTime::now();
    let explicit = calculate_fresh_until(now, cc.as_ref(), resp, authorization, &defaults)
        .map(|t| expires_from_date(resp, cc.as_ref(), now).unwrap_or(t));
    let fresh_until = match explicit {
        Some(t) => t,
        None => {
            // Heuristic freshness only for a 200 that can be revalidated, and never when the
            // origin forbade storing (no-store, private, Authorization).
            let validator =
                resp.headers.contains_key(ETAG) || resp.headers.contains_key(LAST_MODIFIED);
            let forbidden = cc.as_ref().is_some_and(|c| c.no_store() || c.private())
                || (authorization && !public);
            if status != 200 || route.default_ttl.is_zero() || !validator || forbidden {
                return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
            }
            now + route.default_ttl
        }
    };
    let (age, fresh_until) = match age(resp) {
        None => (Duration::ZERO, fresh_until),
        Some(Ok(age)) => (age, fresh_until.checked_sub(age).unwrap_or(now)),
        // Stale from the start: stored, so it can be revalidated, but never served fresh.
        Some(Err(())) => (
            Duration::ZERO,
            now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        ),
    };
    let fresh_until = fresh_until.min(now + ttl_cap);
    let (mut swr, mut sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
    if cc
        .as_ref()
        .is_some_and(|c| c.must_revalidate() || c.proxy_revalidate())
    {
        (swr, sie) = (0, 0);
    }
    let mut header = resp.clone();
    if let Some(c) = &cc {
        c.strip_private_headers(&mut header);
    }
    strip_connection_nominated(&mut header);
    // Created `age` ago, so the Age sent on hits includes the time spent upstream of us.
    let created = now.checked_sub(age).unwrap_or(now);
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, created, swr, sie, header))
}
