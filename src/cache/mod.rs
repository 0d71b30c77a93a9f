//! Response caching: the shared in-memory store, per-route settings, keys and purges.

mod eviction;
mod policy;
mod storage;

pub use policy::{cache_control, cacheability, is_shared};
pub use storage::IndexedStorage;

use crate::config::{CacheConfig, CacheCookies, ConfigError, KeyPath, RouteCacheConfig};
use eviction::ResizableLru;
use http::HeaderName;
use pingora_cache::eviction::EvictionManager;
use pingora_cache::key::{hash_key, CompactCacheKey, HashBinary};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::storage::{PurgeOutcome, PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta, CachePhase, VarianceBuilder};
use pingora_error::OrErr;
use pingora_http::RequestHeader;
use std::time::Duration;

/// The process-wide store: storage, eviction, and the lock that collapses concurrent misses.
///
/// Pingora's cache takes `'static` references; the store is built once per process, so it
/// is leaked deliberately rather than kept in globals.
#[derive(Clone)]
pub struct CacheStore {
    /// Entries and their index.
    pub storage: &'static IndexedStorage,
    eviction: &'static ResizableLru,
    lock: &'static CacheKeyLockImpl,
    /// Responses larger than this pass through uncached.
    pub max_object_bytes: usize,
    /// What the stored entries may weigh in all (`cache.max_bytes`).
    max_bytes: usize,
    /// Entries kept at most (`cache.max_size`).
    max_size: usize,
    /// Upper bound on freshness.
    pub ttl_cap: Duration,
    /// The RFC 9213 targeted field aimed at this gateway (before `CDN-Cache-Control`).
    pub targeted: HeaderName,
    lock_timeout: Duration,
}

impl CacheStore {
    /// Builds the store from `cache:`.
    pub fn build(cfg: &CacheConfig) -> pingora_error::Result<CacheStore> {
        let eviction = ResizableLru::new(cfg.max_bytes, cfg.max_size);
        let lock = CacheLock::new_boxed(Duration::from_millis(cfg.lock_timeout_ms));
        CacheStore::assemble(
            Box::leak(Box::new(IndexedStorage::new()?)),
            Box::leak(Box::new(eviction)),
            Box::leak(lock),
            cfg,
        )
    }

    /// The same store under a reloaded `cache:`: entries, their index, their LRU records and
    /// the miss lock are kept. The new `max_bytes` and `max_size` apply when the runtime goes
    /// live ([`go_live`](Self::go_live)), so a reload that fails changes nothing.
    pub fn reconfigure(&self, cfg: &CacheConfig) -> pingora_error::Result<CacheStore> {
        CacheStore::assemble(self.storage, self.eviction, self.lock, cfg)
    }

    /// Applies this store's size limits to the eviction manager it shares with the store it
    /// replaces; called when the runtime holding it goes live.
    pub fn go_live(&self) -> pingora_error::Result<()> {
        self.eviction.resize(self.max_bytes, self.max_size)
    }

    /// One store over these parts with the settings of `cfg`.
    fn assemble(
        storage: &'static IndexedStorage,
        eviction: &'static ResizableLru,
        lock: &'static CacheKeyLockImpl,
        cfg: &CacheConfig,
    ) -> pingora_error::Result<CacheStore> {
        Ok(CacheStore {
            storage,
            eviction,
            lock,
            max_bytes: cfg.max_bytes,
            max_size: cfg.max_size,
            max_object_bytes: cfg.max_object_bytes,
            ttl_cap: Duration::from_secs(cfg.ttl_seconds),
            targeted: HeaderName::from_bytes(cfg.targeted_cache_control.as_bytes()).or_err(
                pingora_error::ErrorType::InternalError,
                "cache.targeted_cache_control is not a header name",
            )?,
            lock_timeout: Duration::from_millis(cfg.lock_timeout_ms),
        })
    }

    /// Turns the cache on for this request.
    pub fn enable(&self, cache: &mut pingora_cache::HttpCache) {
        let mut overrides = pingora_cache::CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_timeout);
        cache.enable(
            self.storage,
            Some(self.eviction),
            None,
            Some(self.lock),
            Some(overrides),
        );
        cache.set_max_file_size_bytes(self.max_object_bytes);
    }

    /// Entries currently stored.
    pub fn entries(&self) -> usize {
        self.eviction.total_items()
    }

    /// What the stored entries weigh against `max_bytes`: an estimate of the memory they hold.
    pub fn bytes(&self) -> usize {
        self.eviction.total_size()
    }

    /// Entries evicted so far.
    pub fn evictions(&self) -> u64 {
        self.storage.evictions()
    }

    /// Removes every entry whose primary key satisfies `pred` (a walk of the whole store:
    /// admin purges by prefix or of everything); returns how many were removed.
    pub async fn purge_where(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.purge_keys(self.storage.keys_where(pred)).await
    }

    /// Removes the entries (every variant) of one URL, found through the URL index, so the
    /// cost does not grow with the size of the cache. `scheme` `None` means both.
    pub async fn purge_url(
        &self,
        scheme: Option<Scheme>,
        host: &str,
        path_and_query: &str,
    ) -> usize {
        let schemes = match scheme {
            Some(s) => [Some(s), None],
            None => [Some(Scheme::Http), Some(Scheme::Https)],
        };
        let mut purged = 0;
        for scheme in schemes.into_iter().flatten() {
            let url = url_key(scheme, host, path_and_query);
            purged += self.purge_keys(self.storage.keys_of_url(&url)).await;
        }
        purged
    }

    async fn purge_keys(&self, keys: Vec<CompactCacheKey>) -> usize {
        let mut purged = 0;
        let span = Span::inactive();
        for key in keys {
            let target = PurgeTarget::Active(&key);
            match self
                .storage
                .purge(target, PurgeType::Invalidation, &span.handle())
                .await
            {
                Ok(PurgeOutcome::Purged(id)) => {
                    self.eviction.remove(target.removed_entry(id));
                    purged += 1;
                }
                Ok(_) => {}
                Err(e) => log::warn!("cache purge failed: {e}"),
            }
        }
        purged
    }
}

/// A route's cache settings, compiled.
#[derive(Debug)]
pub struct RouteCache {
    /// Freshness for validatable 200s without an explicit lifetime.
    pub default_ttl: Duration,
    /// Default stale-while-revalidate window, seconds.
    pub swr_secs: u32,
    /// Default stale-if-error window, seconds.
    pub sie_secs: u32,
    include_headers: Vec<HeaderName>,
    /// The query is left out of the key (and stripped from the upstream request).
    pub ignore_query: bool,
    /// Requests carrying `Cookie` bypass the cache unless the response is explicitly shared.
    pub cookies_bypass: bool,
    /// A successful unsafe request evicts its URL.
    pub invalidate_on_unsafe: bool,
}

impl RouteCache {
    /// Compiles `routes[i].cache`; `None` when caching is off for the route.
    pub fn build(
        cfg: &RouteCacheConfig,
        path: &KeyPath,
    ) -> Result<Option<RouteCache>, ConfigError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let include_headers = cfg
            .key
            .include_headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    ConfigError::at(
                        &path.key("key").key("include_headers").index(i),
                        format!("invalid header name {h:?}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(RouteCache {
            default_ttl: Duration::from_secs(cfg.default_ttl_seconds),
            swr_secs: cfg.stale_while_revalidate_seconds,
            sie_secs: cfg.stale_if_error_seconds,
            include_headers,
            ignore_query: cfg.key.ignore_query,
            cookies_bypass: cfg.cookies == CacheCookies::Bypass,
            invalidate_on_unsafe: cfg.invalidate_on_unsafe,
        }))
    }

    /// The cache key: scheme, effective host and path (and query), then any configured header
    /// values.
    ///
    /// Parts are NUL-separated; NUL cannot occur in a host, a path or a header value. A header
    /// that is present adds `name=values` (repeated lines joined with `,`), an absent one its
    /// name alone, so absent and empty differ.
    pub fn key(&self, req: &RequestHeader, scheme: Scheme, host: &str) -> CacheKey {
        let pq = if self.ignore_query {
            req.uri.path()
        } else {
            req.uri.path_and_query().map_or("/", |p| p.as_str())
        };
        let mut primary = url_key(scheme, host, pq);
        for name in &self.include_headers {
            primary.push('\0');
            primary.push_str(name.as_str());
            for (i, v) in req.headers.get_all(name).iter().enumerate() {
                primary.push(if i == 0 { '=' } else { ',' });
                push_key_value(&mut primary, v.as_bytes());
            }
        }
        let hash = hash_key(&primary);
        let mut key = CacheKey::new(primary, "");
        // Pingora re-derives the hash on each use (lookup, lock, eviction): do it once here.
        key.set_primary_bin_override(hash);
        key
    }
}

/// Appends a header value to a key without conflating values: text as is, anything else
/// (obs-text that is not UTF-8) as hex after a 0x01 marker, a byte no header value may hold.
fn push_key_value(key: &mut String, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) => key.push_str(text),
        Err(_) => {
            key.push('\u{1}');
            for b in value {
                key.push(char::from(HEX[usize::from(b >> 4)]));
                key.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A request's scheme, the first part of its cache key: a `301 -> https` stored from the
/// cleartext listener must never answer on the TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Cleartext.
    Http,
    /// TLS.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The scheme of a connection.
    pub fn of(tls: bool) -> Scheme {
        if tls {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

/// `scheme\0host\0path?query`, with the host lower-cased: the part of a key that names a URL,
/// which the URL index and purges match.
fn url_key(scheme: Scheme, host: &str, path_and_query: &str) -> String {
    let mut s = String::with_capacity(host.len() + path_and_query.len() + 8);
    s.push_str(scheme.as_str());
    s.push('\0');
    s.push_str(host);
    s.make_ascii_lowercase();
    s.push('\0');
    s.push_str(path_and_query);
    s
}

/// The URL part of a primary key (see [`url_key`]).
pub fn url_of(primary: &str) -> &str {
    let mut nuls = primary.match_indices('\0').map(|(i, _)| i);
    match nuls.nth(2) {
        Some(end) => &primary[..end],
        None => primary,
    }
}

/// The host part of a primary key.
pub fn primary_host(primary: &str) -> &str {
    primary.split('\0').nth(1).unwrap_or("")
}

/// The path (and query) part of a primary key.
pub fn primary_path(primary: &str) -> &str {
    primary.split('\0').nth(2).unwrap_or("")
}

/// The variance key for a stored response's `Vary` headers and this request.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut vb = VarianceBuilder::new();
    for name in &names {
        let value = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect::<Vec<_>>()
            .join(&b","[..]);
        vb.add_owned_name_value(name.clone(), value);
    }
    vb.finalize()
}

/// The `X-Cache-Status` value for a cache phase.
pub fn status_label(phase: &CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale | CachePhase::StaleUpdating => "STALE",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

#[cfg(test)]
mod tests {
    use super::push_key_value;

    #[test]
    fn key_values_that_are_not_utf8_stay_distinct() {
        let key = |v: &[u8]| {
            let mut k = String::new();
            push_key_value(&mut k, v);
            k
        };
        assert_eq!(key(b"plain"), "plain");
        assert_eq!(key(b"caf\xe9"), "\u{1}636166e9");
        assert_ne!(
            key(b"caf\xe9"),
            key(b"caf\xe8"),
            "lossy decoding would merge these"
        );
        assert_ne!(key(b"caf\xe9"), key("caf\u{fffd}".as_bytes()));
    }
}
