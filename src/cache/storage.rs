//! Cache storage: entries kept in memory with their response header already parsed, sharded
//! by key hash, with an index from URL to its stored variants so that invalidating a URL costs
//! the same whatever the size of the cache; purges by prefix or of everything walk the store.
//!
//! Pingora's `MemCache` stores the header zstd-compressed and decompresses and re-parses it on
//! every hit, formats the key as hex for its map, copies the body out per hit and puts every
//! entry behind one lock. Here a hit clones the parsed header, shares the body and takes one
//! shard's read lock.

use async_trait::async_trait;
use bytes::Bytes;
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

/// Lock shards; hits on different keys from different workers rarely meet on one lock.
const SHARDS: usize = 16;

/// One stored response.
struct Entry {
    /// Pingora's own encoding of the cache times and variance (a few dozen bytes); decoding
    /// it per hit keeps every field Pingora tracks exact without reaching into its internals.
    internal: Vec<u8>,
    header: ResponseHeader,
    body: Bytes,
    compact: CompactCacheKey,
    primary: Box<str>,
    /// What the eviction manager charges for this entry; see [`weigh`].
    weight: usize,
}

type Map = HashMap<HashBinary, Arc<Entry>, ahash::RandomState>;
type Shard = RwLock<Map>;
/// URL (`scheme\0host\0path?query`) to the keys of its stored entries: every variant (Vary)
/// and every `include_headers` value.
type UrlMap = HashMap<Box<str>, Vec<CompactCacheKey>, ahash::RandomState>;

/// The in-memory store behind the response cache.
pub struct IndexedStorage {
    shards: Box<[Shard]>,
    /// Sharded like the entries, by the URL's hash. Lock order: an entry shard, then a URL
    /// shard, never the reverse, so the two cannot deadlock.
    urls: Box<[RwLock<UrlMap>]>,
    url_hasher: ahash::RandomState,
    /// A serialized empty header: `CacheMeta` can only be built by deserializing, so a hit
    /// deserializes this (cheap) and then swaps in the stored, already parsed header.
    blank_header: Vec<u8>,
    evictions: AtomicU64,
}

impl IndexedStorage {
    /// An empty store.
    pub fn new() -> Result<Self> {
        let header = ResponseHeader::build(200, Some(0))?;
        let now = SystemTime::now();
        let (_, blank_header) = CacheMeta::new(now, now, 0, 0, header).serialize()?;
        Ok(IndexedStorage {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            urls: (0..SHARDS).map(|_| RwLock::default()).collect(),
            url_hasher: ahash::RandomState::new(),
            blank_header,
            evictions: AtomicU64::new(0),
        })
    }

    /// Entries removed by the eviction manager so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Compact keys of the stored entries whose primary key satisfies `pred`.
    pub fn keys_where(&self, pred: impl Fn(&str) -> bool) -> Vec<CompactCacheKey> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            keys.extend(
                shard
                    .values()
                    .filter(|e| pred(&e.primary))
                    .map(|e| e.compact.clone()),
            );
        }
        keys
    }

    /// Keys of every stored entry of one URL, from the index (no walk of the store).
    pub fn keys_of_url(&self, url: &str) -> Vec<CompactCacheKey> {
        self.url_shard(url)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(url)
            .cloned()
            .unwrap_or_default()
    }

    fn url_shard(&self, url: &str) -> &RwLock<UrlMap> {
        &self.urls[self.url_hasher.hash_one(url) as usize % SHARDS]
    }

    fn shard(&self, hash: &HashBinary) -> &Shard {
        &self.shards[hash[0] as usize % SHARDS]
    }

    // Nothing panics while holding a shard lock, so a poisoned one still holds a consistent map.
    fn read(&self, hash: &HashBinary) -> RwLockReadGuard<'_, Map> {
        self.shard(hash)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, hash: &HashBinary) -> RwLockWriteGuard<'_, Map> {
        self.shard(hash)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, hash: HashBinary, entry: Entry) {
        let url: Box<str> = super::url_of(&entry.primary).into();
        let compact = entry.compact.clone();
        let mut shard = self.write(&hash);
        shard.insert(hash, Arc::new(entry));
        let mut urls = self
            .url_shard(&url)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let keys = urls.entry(url).or_default();
        if !keys.iter().any(|k| k.combined_bin() == hash) {
            keys.push(compact);
        }
    }

    /// Removes an entry and its index slot; whether it was there.
    fn remove(&self, hash: &HashBinary) -> bool {
        let mut shard = self.write(hash);
        let Some(entry) = shard.remove(hash) else {
            return false;
        };
        let url = super::url_of(&entry.primary);
        let mut urls = self
            .url_shard(url)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(keys) = urls.get_mut(url) {
            keys.retain(|k| k.combined_bin() != *hash);
            if keys.is_empty() {
                urls.remove(url);
            }
        }
        true
    }
}

/// The meta as stored: Pingora's encoding of its times, and its header parsed back from
/// Pingora's header encoding. The round trip is what `MemCache` served, and it leaves a header
/// that owns its bytes: the header of a response just read from an origin points into that
/// connection's read buffer, and keeping it would keep the buffer (kilobytes) per entry.
fn stored_parts(meta: &CacheMeta) -> Result<(Vec<u8>, ResponseHeader)> {
    let (internal, header) = meta.serialize()?;
    let parsed = CacheMeta::deserialize(&internal, &header)?;
    Ok((internal, parsed.response_header_copy()))
}

/// Resident bytes of one stored header line beyond its name and value: a slot in each of the
/// header's two maps (values, and the names' original case), their index entries, and the
/// allocations that hold the value and the case-preserved name. An estimate that matches the
/// RSS measured per entry (docs/performance.md), so `max_bytes` bounds real memory.
const HEADER_LINE_BYTES: usize = 200;

/// Resident bytes of an entry beyond its body and header: the entry, its map slot, its key, its
/// place in the eviction manager and the allocator's share. Calibrated against RSS with
/// `benches/cache-sizes.sh` (about 2.8 KB per entry of a 102-byte body with six headers).
const ENTRY_BYTES: usize = 1024;

/// What a stored entry weighs against `max_bytes`: an estimate of the memory it holds.
fn weigh(entry: &Entry) -> usize {
    let header: usize = entry
        .header
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_LINE_BYTES)
        .sum();
    let url = super::url_of(&entry.primary).len();
    ENTRY_BYTES
        + entry.body.len()
        + header
        + entry.internal.len()
        + entry.primary.len()
        + url
        + URL_INDEX_BYTES
}

/// Resident bytes of an entry's slot in the URL index beyond the URL itself: the map slot,
/// the boxed key and its compact cache key.
const URL_INDEX_BYTES: usize = 96;

#[async_trait]
impl Storage for IndexedStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let Some(entry) = self.read(&hash).get(&hash).cloned() else {
            return Ok(None);
        };
        let mut meta = CacheMeta::deserialize(&entry.internal, &self.blank_header)?;
        *meta.response_header_mut() = entry.header.clone();
        let hit = Hit {
            end: entry.body.len(),
            weight: entry.weight,
            body: entry.body.clone(),
            start: 0,
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (internal, header) = stored_parts(meta)?;
        Ok(Box::new(Miss {
            storage: self,
            hash: key.combined_bin(),
            entry: Entry {
                internal,
                header,
                body: Bytes::new(),
                compact: key.to_compact(),
                primary: String::from_utf8_lossy(key.primary_key()).into(),
                weight: 0,
            },
            body: Vec::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        // Entries carry no entry id, by choice: with ids, every refill of a key would be a new
        // entry to the eviction manager and the old one would stay counted (in entries and
        // bytes) until evicted. Without them, an eviction decided just before a refill of the
        // same key can remove the refill: a spurious miss, nothing worse.
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let hash = target.key().combined_bin();
        if !self.remove(&hash) {
            return Ok(PurgeOutcome::NotFound);
        }
        if matches!(purge_type, PurgeType::Eviction) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(PurgeOutcome::Purged(None))
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let (internal, header) = stored_parts(meta)?;
        let mut shard = self.write(&hash);
        let Some(slot) = shard.get_mut(&hash) else {
            return Ok(false);
        };
        // The weight stays as admitted: the eviction manager is not told of a new one.
        *slot = Arc::new(Entry {
            internal,
            header,
            body: slot.body.clone(),
            compact: slot.compact.clone(),
            primary: slot.primary.clone(),
            weight: slot.weight,
        });
        Ok(true)
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

/// Reads one stored body, or a range of it, without copying it.
struct Hit {
    body: Bytes,
    weight: usize,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} beyond the body ({})", self.body.len()),
            );
        }
        self.start = start;
        // An end past the last byte is allowed: the range is cut to the body.
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        // Rewinds, so one handler serves every part of a multi-range request.
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.weight
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Collects a response body; the entry becomes visible only when `finish` is called, so
/// a write dropped part-way (client gone, object too large) leaves nothing behind.
struct Miss {
    storage: &'static IndexedStorage,
    hash: HashBinary,
    /// Everything but the body, taken from the response header.
    entry: Entry,
    body: Vec<u8>,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Miss {
            storage,
            hash,
            mut entry,
            body,
        } = *self;
        // Exactly the body's size: a grown Vec's spare capacity would be held but not weighed.
        entry.body = Bytes::from(body.into_boxed_slice());
        entry.weight = weigh(&entry);
        let weight = entry.weight;
        storage.insert(hash, entry);
        Ok(MissFinishType::Created(weight))
    }
}
