//! Cache storage: Pingora's in-memory store behind an index of primary keys, so entries can be
//! purged by URL, by prefix or all at once, and evictions can be counted.

use async_trait::async_trait;
use pingora_cache::key::CompactCacheKey;
use pingora_cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta, MemCache};
use pingora_error::Result;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// [`MemCache`] plus a primary-key index; touched on writes and purges only, never on hits.
pub struct IndexedStorage {
    inner: MemCache,
    index: Mutex<HashMap<CompactCacheKey, String>>,
    evictions: AtomicU64,
}

impl IndexedStorage {
    /// An empty store.
    pub fn new() -> Self {
        IndexedStorage {
            inner: MemCache::new(),
            index: Mutex::new(HashMap::new()),
            evictions: AtomicU64::new(0),
        }
    }

    /// Entries removed by the eviction manager so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Compact keys of the stored entries whose primary key satisfies `pred`.
    pub fn keys_where(&self, pred: impl Fn(&str) -> bool) -> Vec<CompactCacheKey> {
        match self.index.lock() {
            Ok(index) => index
                .iter()
                .filter(|(_, primary)| pred(primary))
                .map(|(k, _)| k.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn forget(&self, key: &CompactCacheKey) {
        if let Ok(mut index) = self.index.lock() {
            index.remove(key);
        }
    }
}

impl Default for IndexedStorage {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Storage for IndexedStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.inner.lookup(key, trace).await
    }

    async fn lookup_streaming_write(
        &'static self,
        key: &CacheKey,
        tag: Option<&[u8]>,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        self.inner.lookup_streaming_write(key, tag, trace).await
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<MissHandler> {
        if let (Ok(mut index), Some(primary)) = (self.index.lock(), key.primary_key_str()) {
            index.insert(key.to_compact(), primary.to_string());
        }
        self.inner.get_miss_handler(key, meta, trace).await
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let outcome = self.inner.purge(target, purge_type, trace).await?;
        if let PurgeTarget::Active(key) = target {
            self.forget(key);
        } else if let PurgeTarget::Exact(entry) = target {
            self.forget(entry.key());
        }
        if matches!(purge_type, PurgeType::Eviction) && matches!(outcome, PurgeOutcome::Purged(_)) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        self.inner.update_meta(key, meta, trace).await
    }

    /// Off: with partial reads, a response that outgrows `max_object_bytes` mid-body would
    /// abort the client's stream along with the cache write; without them it streams on
    /// uncached. Concurrent misses still collapse on the cache lock.
    fn support_streaming_partial_write(&self) -> bool {
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
