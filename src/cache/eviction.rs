//! The cache's eviction manager: Pingora's sharded LRU behind a pointer a reload can replace,
//! because the LRU's item cap (`cache.max_size`) is fixed when it is built.
//!
//! Pingora holds the manager as a `&'static` for the process's life, so this wrapper is what
//! it holds; each call goes to the LRU live at that moment.

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_cache::eviction::{lru, CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_error::Result;
use std::sync::Arc;
use std::time::SystemTime;

/// Shards of the LRU; spreads its locks across workers.
pub const SHARDS: usize = 16;

type Lru = lru::Manager<SHARDS>;

/// Pingora's LRU with a weight limit (`max_bytes`) and an item cap (`max_size`) that can both
/// change while the process runs.
pub struct ResizableLru {
    current: ArcSwap<Lru>,
    max_size: std::sync::atomic::AtomicUsize,
}

fn build(max_bytes: usize, max_size: usize) -> Lru {
    let per_shard = (max_size / SHARDS).max(1);
    Lru::with_capacity_and_watermark(max_bytes, per_shard, Some(max_size))
}

impl ResizableLru {
    /// An empty LRU of `max_bytes` and `max_size` items.
    pub fn new(max_bytes: usize, max_size: usize) -> ResizableLru {
        ResizableLru {
            current: ArcSwap::from_pointee(build(max_bytes, max_size)),
            max_size: max_size.into(),
        }
    }

    /// Applies new limits. A new weight limit applies to the next admissions. A new item cap
    /// needs a new LRU: it is swapped in first (so every admission from now on is recorded in
    /// it), then the old one's records are moved over, in their order.
    pub fn resize(&self, max_bytes: usize, max_size: usize) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.max_size.swap(max_size, Ordering::AcqRel) == max_size {
            self.current.load().set_weight_limit(max_bytes);
            return Ok(());
        }
        let old = self.current.swap(Arc::new(build(max_bytes, max_size)));
        let new = self.current.load();
        for shard in 0..old.shards() {
            new.deserialize_shard(&old.serialize_shard(shard)?)?;
        }
        Ok(())
    }
}

#[async_trait]
impl EvictionManager for ResizableLru {
    fn total_size(&self) -> usize {
        self.current.load().total_size()
    }
    fn total_items(&self) -> usize {
        self.current.load().total_items()
    }
    fn evicted_size(&self) -> usize {
        self.current.load().evicted_size()
    }
    fn evicted_items(&self) -> usize {
        self.current.load().evicted_items()
    }
    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        self.current.load().admit(item, size, fresh_until)
    }
    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        self.current
            .load()
            .increment_weight(item, delta, max_weight)
    }
    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        self.current.load().remove(item)
    }
    fn access(&self, item: &CacheEntryKey, size: usize, fresh_until: SystemTime) -> bool {
        self.current.load().access(item, size, fresh_until)
    }
    fn peek(&self, item: &CacheEntryKey) -> bool {
        self.current.load().peek(item)
    }
    async fn save(&self, dir_path: &str) -> Result<()> {
        let lru = self.current.load_full();
        lru.save(dir_path).await
    }
    async fn load(&self, dir_path: &str) -> Result<()> {
        let lru = self.current.load_full();
        lru.load(dir_path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::CacheKey;

    fn key(i: usize) -> CacheEntryKey {
        CacheEntryKey::key_only(CacheKey::new("", format!("/{i}")).to_compact())
    }

    #[test]
    fn a_new_item_cap_keeps_the_records_and_evicts_down_to_it() {
        let lru = ResizableLru::new(1 << 30, 1000);
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        for i in 0..100 {
            assert!(lru.admit(key(i), 10, later).is_empty());
        }
        lru.resize(1 << 30, 2000).unwrap();
        assert_eq!(lru.total_items(), 100, "records moved to the new LRU");
        assert!(lru.peek(&key(7)));
        // A smaller cap: the next admission evicts down to it.
        lru.resize(1 << 30, 50).unwrap();
        let evicted = lru.admit(key(1000), 10, later);
        assert!(lru.total_items() <= 50, "{} items", lru.total_items());
        assert!(!evicted.is_empty());
    }
}
