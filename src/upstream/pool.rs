//! One upstream pool: its backends, their pre-built peers, selection and in-flight counts.
//!
//! The backend set is either fixed (every server an IP literal) or followed through DNS
//! ([`super::dns`]). Either way each pingora [`Backend`] carries its [`BackendSlot`] in its
//! extensions, so what the selector returns is always the slot of the same generation, and a
//! request keeps the slot it picked (its in-flight count, passive health, peer) even after
//! DNS took the address away.

use super::breaker::CircuitBreaker;
use super::dns::{self, DnsState};
use super::health;
use super::selection::{HashKey, Selector, SlotRef};
use crate::config::{ConfigError, KeyPath, LoadBalancing, ServerAddress, UpstreamConfig};
use crate::policy::now_us;
use arc_swap::ArcSwap;
use http::HeaderValue;
use pingora_core::protocols::ALPN;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::{ServiceDiscovery, Static};
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{Backend, Backends, HealthCheckService, HealthRegistry, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backend of an upstream, with the peer template the proxy clones for each request.
pub struct BackendSlot {
    /// Stable id within the upstream: the server's index for a fixed set, a fresh number for
    /// each address DNS brings in. What `tried` lists hold.
    pub id: usize,
    /// The backend's address.
    pub addr: SocketAddr,
    /// Configured weight.
    pub weight: usize,
    /// Requests currently in flight to this backend.
    pub inflight: AtomicUsize,
    /// Consecutive failures seen in live traffic.
    failures: AtomicU32,
    /// Passive ejection deadline (microseconds on the policy clock); 0 when not ejected.
    ejected_until: AtomicU64,
    /// Host header sent when a route does not preserve the client's.
    host: HeaderValue,
    /// The backend as the selector knows it (address and weight; no extensions, so no cycle).
    backend: Backend,
    peer: HttpPeer,
}

impl BackendSlot {
    /// A slot for `addr`, reached with the upstream's peer settings; `host` is its Host header.
    pub(crate) fn new(
        id: usize,
        addr: SocketAddr,
        weight: usize,
        host: HeaderValue,
        peer: HttpPeer,
    ) -> BackendSlot {
        BackendSlot {
            id,
            addr,
            weight,
            inflight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            host,
            backend: Backend {
                addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(addr),
                weight,
                ext: http::Extensions::new(),
            },
            peer,
        }
    }

    /// Takes over `old`'s passive-health record (same server, replaced by a reload).
    pub(crate) fn carry_passive(&self, old: &BackendSlot) {
        self.failures
            .store(old.failures.load(Ordering::Relaxed), Ordering::Relaxed);
        self.ejected_until
            .store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The pingora backend that carries this slot in its extensions.
    pub(crate) fn marked_backend(self: &Arc<Self>) -> Backend {
        let mut b = self.backend.clone();
        b.ext.insert(SlotRef(self.clone()));
        b
    }

    /// The backend as the selector's health table keys it.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The Host header sent to this backend when the client's is not preserved.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }
}

/// The current backend slots: fixed, or swapped whole by DNS discovery.
enum Slots {
    Fixed(Arc<Vec<Arc<BackendSlot>>>),
    Dynamic(Arc<ArcSwap<Vec<Arc<BackendSlot>>>>),
}

/// An upstream pool, built once from `upstreams.NAME`.
pub struct Upstream {
    /// The pool's name from the config.
    pub name: Arc<str>,
    /// Extra attempts on another backend after a connect failure.
    pub retries: usize,
    /// What consistent hashing hashes on.
    pub hash_key: HashKey,
    /// Whether an active health check runs for this pool.
    pub health_checked: bool,
    /// DNS discovery state, when a server address is a name.
    pub dns: Option<Arc<DnsState>>,
    slots: Slots,
    /// The upstream's circuit breaker, when configured; shared with the upstream a reload
    /// replaced when the servers and the breaker's settings are unchanged.
    pub breaker: Option<Arc<CircuitBreaker>>,
    /// Keep upstream connections per worker thread (set when `server.work_stealing` is off).
    ///
    /// Pingora's no-steal runtime gives each worker its own reactor, so a pooled connection
    /// reused by another worker has every readiness event delivered to the worker that opened
    /// it, which then has to wake the user (an eventfd write and a context switch per event).
    pub per_worker_pools: bool,
    /// Keep the case of response header names read from this pool's backends
    /// (`server.preserve_header_case`).
    pub preserve_header_case: bool,
    passive: Option<PassiveHealth>,
    selector: Selector,
    /// Active health results, kept across reloads that leave the check itself unchanged.
    health: Arc<KeptHealth>,
    /// Background loops (active health checks, DNS refreshes); the
    /// [`Supervisor`](super::Supervisor) runs each for as long as a live runtime holds it.
    pub background: Vec<Arc<dyn BackgroundService + Send + Sync>>,
}

/// The active health state of an upstream's backends: one registry, probed by one loop,
/// shared by every upstream object a reload builds while `health_check:` and `tls:` stay the
/// same, so a backend that is down stays down (and one that is up stays up) through a reload.
struct KeptHealth {
    registry: Arc<HealthRegistry>,
    /// The probe loop, when `health_check:` is set.
    service: Option<Arc<HealthCheckService>>,
}

/// Outlier ejection settings, compiled from `passive_health`.
struct PassiveHealth {
    threshold: u32,
    cooldown_us: u64,
    failure_statuses: Vec<u16>,
}

/// Holds a backend's in-flight count up, and the backend itself alive, until the request ends.
pub struct InflightGuard {
    slot: Arc<BackendSlot>,
}

impl InflightGuard {
    /// The backend this request was sent to.
    pub fn slot(&self) -> &Arc<BackendSlot> {
        &self.slot
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.slot.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Builds the pool (its health-check loop, if any, in [`background`](Self::background)).
    ///
    /// `previous` is the upstream of the same name a reload replaces, with its config: the
    /// state that its changes leave meaningful carries over (health results, the breaker,
    /// passive ejections).
    pub fn build(
        name: &str,
        cfg: &UpstreamConfig,
        idle_timeout: Option<Duration>,
        previous: Option<(&Upstream, &UpstreamConfig)>,
    ) -> Result<Upstream, ConfigError> {
        let path = KeyPath::root().key("upstreams").key(name);
        let host_err = |i: usize, e: String| {
            let key = match cfg.tls {
                Some(_) => path.key("tls").key("sni"),
                None => path.key("servers").index(i).key("address"),
            };
            ConfigError::at(&key, e)
        };
        let (slots, discovery, dns, update): (
            Slots,
            Box<dyn ServiceDiscovery + Send + Sync>,
            _,
            _,
        ) = if cfg.has_dns_names() {
            let (discovery, state) = dns::DnsDiscovery::start(name, cfg, &path, idle_timeout)?;
            let update = Some(discovery.tick());
            let slots = Slots::Dynamic(state.slots.clone());
            (slots, Box::new(discovery), Some(state), update)
        } else {
            let mut set = BTreeSet::new();
            let mut list = Vec::with_capacity(cfg.servers.len());
            for (i, server) in cfg.servers.iter().enumerate() {
                let ServerAddress::Ip(addr) = server.address else {
                    continue;
                };
                let host =
                    host_value(cfg, &server.address.to_string()).map_err(|e| host_err(i, e))?;
                let slot = Arc::new(BackendSlot::new(
                    i,
                    addr,
                    server.weight,
                    host,
                    peer(cfg, addr, idle_timeout),
                ));
                set.insert(slot.marked_backend());
                list.push(slot);
            }
            (Slots::Fixed(Arc::new(list)), Static::new(set), None, None)
        };
        let interval = cfg
            .health_check
            .as_ref()
            .map(|hc| Duration::from_millis(hc.interval_ms));
        let kept_health = previous
            .filter(|(_, old)| old.health_check == cfg.health_check && old.tls == cfg.tls)
            .map(|(up, _)| up.health.clone());
        let health = match kept_health {
            Some(kept) => kept,
            None => Arc::new(KeptHealth::build(cfg, interval, &path)?),
        };
        let mut background: Vec<Arc<dyn BackgroundService + Send + Sync>> = Vec::new();
        if let Some(service) = &health.service {
            background.push(service.clone());
        }
        macro_rules! balancer {
            ($alg:ty) => {{
                let lb = Arc::new(
                    balancer::<$alg>(discovery, health.registry.clone(), update)
                        .map_err(|e| ConfigError::at(&path.key("servers"), e))?,
                );
                if update.is_some() {
                    background.push(lb.clone());
                }
                lb
            }};
        }
        let selector = match cfg.load_balancing {
            LoadBalancing::RoundRobin => {
                Selector::RoundRobin(balancer!(pingora_load_balancing::selection::RoundRobin))
            }
            LoadBalancing::Random => {
                Selector::Random(balancer!(pingora_load_balancing::selection::Random))
            }
            LoadBalancing::ConsistentHash => {
                Selector::Consistent(balancer!(pingora_load_balancing::selection::Consistent))
            }
            LoadBalancing::LeastConnections => Selector::LeastConnections(
                balancer!(pingora_load_balancing::selection::RoundRobin),
                AtomicUsize::new(0),
            ),
        };
        let hash_key = cfg
            .hash_key
            .as_deref()
            .and_then(HashKey::parse)
            .unwrap_or(HashKey::ClientIp);
        let passive = cfg.passive_health.enabled.then(|| PassiveHealth {
            threshold: cfg.passive_health.consecutive_failures.unwrap_or_else(|| {
                cfg.health_check
                    .as_ref()
                    .map_or(3, |hc| hc.unhealthy_threshold as u32)
            }),
            cooldown_us: cfg.passive_health.cooldown_ms * 1000,
            failure_statuses: cfg.passive_health.failure_statuses.clone(),
        });
        // The breaker judges the servers as a whole, so other changes (timeouts, retries, pool
        // sizes) leave its state meaningful.
        let same_servers = previous.filter(|(_, old)| old.servers == cfg.servers);
        let breaker = match same_servers.and_then(|(up, old)| {
            (old.circuit_breaker == cfg.circuit_breaker).then(|| up.breaker.clone())?
        }) {
            Some(kept) => Some(kept),
            None => cfg
                .circuit_breaker
                .as_ref()
                .map(|c| Arc::new(CircuitBreaker::new(c))),
        };
        // Ejections are kept only under the same passive_health rules (turning it off must
        // let an ejected server back at once).
        if let Some((old_up, _)) =
            same_servers.filter(|(_, old)| old.passive_health == cfg.passive_health)
        {
            if let (Slots::Fixed(new), Slots::Fixed(old)) = (&slots, &old_up.slots) {
                for (n, o) in new.iter().zip(old.iter()) {
                    n.carry_passive(o);
                }
            }
        }
        let upstream = Upstream {
            name: name.into(),
            breaker,
            health,
            passive,
            retries: cfg.retries,
            hash_key,
            health_checked: interval.is_some(),
            dns,
            slots,
            per_worker_pools: false,
            preserve_header_case: true,
            selector,
            background,
        };
        Ok(upstream)
    }

    /// Runs `f` over the current backend slots (an `ArcSwap` load for a DNS upstream).
    fn with_slots<R>(&self, f: impl FnOnce(&[Arc<BackendSlot>]) -> R) -> R {
        match &self.slots {
            Slots::Fixed(list) => f(list),
            Slots::Dynamic(swap) => f(&swap.load()),
        }
    }

    /// The current backends, in config (then address) order; for status pages and scrapes.
    pub fn backends(&self) -> Arc<Vec<Arc<BackendSlot>>> {
        match &self.slots {
            Slots::Fixed(list) => list.clone(),
            Slots::Dynamic(swap) => swap.load_full(),
        }
    }

    /// Picks a ready backend not yet tried by this request; `key` matters only for hashing.
    /// `tried` holds [`BackendSlot::id`]s.
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<Arc<BackendSlot>> {
        self.with_slots(|slots| {
            if let [only] = slots {
                // Nothing to choose between (an ejected lone backend still serves, see below).
                return (!tried.contains(&only.id) && self.is_healthy(only)).then(|| only.clone());
            }
            let now = now_us();
            self.selector
                .select(key, slots, |s| {
                    !tried.contains(&s.id) && !self.is_ejected(s, now)
                })
                // Ejecting every backend would turn a flaky upstream into a dead one, so when
                // nothing else is left the ejected ones serve (Envoy's panic threshold, at 100%).
                .or_else(|| self.selector.select(key, slots, |s| !tried.contains(&s.id)))
        })
    }

    /// Whether a backend other than `current` and those in `tried` could take a retry.
    pub fn has_alternative(&self, tried: &[usize], current: usize) -> bool {
        let now = now_us();
        self.with_slots(|slots| {
            slots.iter().any(|s| {
                s.id != current
                    && !tried.contains(&s.id)
                    && self.is_healthy(s)
                    && !self.is_ejected(s, now)
            })
        })
    }

    /// Counts a request against `slot` until the guard drops.
    pub fn begin(&self, slot: Arc<BackendSlot>) -> InflightGuard {
        slot.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard { slot }
    }

    /// A fresh peer for `slot`, with the pool's timeouts and TLS settings.
    pub fn peer(&self, slot: &BackendSlot) -> Box<HttpPeer> {
        let mut peer = Box::new(slot.peer.clone());
        peer.options.preserve_h1_response_header_case = self.preserve_header_case;
        if self.per_worker_pools {
            // Part of the pool key, so a connection is only reused by the worker that opened it.
            peer.group_key = worker_id();
        }
        peer
    }

    /// Whether `slot` is passively ejected at `now` (policy-clock microseconds).
    pub fn is_ejected(&self, slot: &BackendSlot, now: u64) -> bool {
        slot.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether an upstream status counts as a live-traffic failure of the backend.
    pub fn is_backend_failure_status(&self, status: u16) -> bool {
        self.passive
            .as_ref()
            .is_some_and(|p| p.failure_statuses.contains(&status))
    }

    /// Records a live-traffic outcome for `slot`, ejecting it after a run of failures.
    pub fn record_backend(&self, b: &BackendSlot, failed: bool) {
        let Some(p) = &self.passive else { return };
        if !failed {
            b.failures.store(0, Ordering::Relaxed);
            return;
        }
        if b.failures.fetch_add(1, Ordering::AcqRel) + 1 >= p.threshold {
            b.failures.store(0, Ordering::Relaxed);
            b.ejected_until
                .store(now_us() + p.cooldown_us, Ordering::Relaxed);
            log::warn!(
                "upstream {}: ejecting backend {} for {} ms after {} consecutive failures",
                self.name,
                b.addr,
                p.cooldown_us / 1000,
                p.threshold
            );
        }
    }

    /// Whether selection depends on the request (consistent hashing).
    pub fn hashes(&self) -> bool {
        matches!(self.selector, Selector::Consistent(_))
    }

    /// Whether `slot` is currently healthy (a slot DNS took away is not).
    pub fn is_healthy(&self, slot: &BackendSlot) -> bool {
        self.selector.ready(&slot.backend)
    }

    /// Number of backends that are currently healthy.
    pub fn healthy_count(&self) -> usize {
        self.with_slots(|slots| slots.iter().filter(|s| self.is_healthy(s)).count())
    }
}

impl KeptHealth {
    /// A fresh registry (every backend starts healthy) and its probe loop.
    fn build(
        cfg: &UpstreamConfig,
        interval: Option<Duration>,
        path: &KeyPath,
    ) -> Result<KeptHealth, ConfigError> {
        // Keyed by address alone (Pingora's default adds the weight), so a reload that only
        // reweights a server keeps its result.
        let registry = Arc::new(HealthRegistry::with_equivalence(|b: &Backend| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(&b.addr, &mut h);
            std::hash::Hasher::finish(&h)
        }));
        let check = health::build(cfg)
            .map_err(|e| ConfigError::at(&path.key("health_check"), e.to_string()))?;
        let service = check.map(|check| {
            registry.set_health_check(check);
            let mut service = HealthCheckService::new(registry.clone());
            service.health_check_frequency = interval;
            service.parallel_health_check = true;
            Arc::new(service)
        });
        Ok(KeptHealth { registry, service })
    }
}

fn balancer<S>(
    discovery: Box<dyn ServiceDiscovery + Send + Sync>,
    registry: Arc<HealthRegistry>,
    update: Option<Duration>,
) -> Result<LoadBalancer<S>, String>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    // Probes run once per registry (KeptHealth's loop), not per balancer, so a balancer a
    // reload builds reads the results its predecessor's probes left.
    let backends = Backends::new_with_health_registry(discovery, registry);
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    lb.update_frequency = update;
    // Static discovery never waits, and DNS discovery's first answer is the start-up lookup,
    // so the first update completes at once, on this thread, without a runtime.
    match futures::FutureExt::now_or_never(lb.update()) {
        Some(Ok(())) => Ok(lb),
        Some(Err(e)) => Err(format!("building the backend set: {e}")),
        None => Err("building the backend set: discovery did not answer at once".into()),
    }
}

/// The peer template for a backend at `addr`.
pub(crate) fn peer(
    cfg: &UpstreamConfig,
    addr: SocketAddr,
    idle_timeout: Option<Duration>,
) -> HttpPeer {
    let (tls, sni) = match &cfg.tls {
        Some(t) => (true, t.sni.clone()),
        None => (false, String::new()),
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(Duration::from_millis(cfg.timeouts.connect_ms));
    o.total_connection_timeout = Some(Duration::from_millis(cfg.timeouts.connect_ms * 2));
    o.read_timeout = Some(Duration::from_millis(cfg.timeouts.read_ms));
    o.write_timeout = Some(Duration::from_millis(cfg.timeouts.write_ms));
    o.idle_timeout = Some(idle_timeout.unwrap_or(Duration::from_secs(
        cfg.connection_pool.idle_timeout_seconds,
    )));
    if let Some(t) = &cfg.tls {
        o.verify_cert = t.verify;
        o.verify_hostname = t.verify;
        if t.h2 {
            o.alpn = ALPN::H2H1;
        }
    }
    peer
}

/// The Host header for a backend whose client Host is not preserved: its TLS name, else its
/// address. Built once so each request only clones it.
pub(crate) fn host_value(cfg: &UpstreamConfig, address: &str) -> Result<HeaderValue, String> {
    let host = cfg.tls.as_ref().map_or(address, |t| t.sni.as_str());
    HeaderValue::from_str(host).map_err(|_| format!("{host:?} is not a valid Host header"))
}

/// A small id for the current worker thread, stable for its lifetime.
fn worker_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local!(static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed));
    ID.with(|id| *id)
}
