//! One upstream pool: its backends, their pre-built peers, selection and in-flight counts.

use super::breaker::CircuitBreaker;
use super::health;
use super::selection::{HashKey, Selector, SlotIndex};
use crate::config::{ConfigError, KeyPath, LoadBalancing, UpstreamConfig};
use crate::policy::now_us;
use http::HeaderValue;
use pingora_core::protocols::ALPN;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backend of an upstream, with the peer template the proxy clones for each request.
pub struct BackendSlot {
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
    backend: Backend,
    peer: HttpPeer,
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
    /// Backends in config order.
    pub backends: Vec<BackendSlot>,
    /// The upstream's circuit breaker, when configured.
    pub breaker: Option<CircuitBreaker>,
    /// Keep upstream connections per worker thread (set when `server.work_stealing` is off).
    ///
    /// Pingora's no-steal runtime gives each worker its own reactor, so a pooled connection
    /// reused by another worker has every readiness event delivered to the worker that opened
    /// it, which then has to wake the user (an eventfd write and a context switch per event).
    pub per_worker_pools: bool,
    passive: Option<PassiveHealth>,
    selector: Selector,
    /// The balancer's health-check loop, when one runs; the [`Supervisor`](super::Supervisor)
    /// runs it for as long as a live runtime holds this upstream.
    pub background: Option<Arc<dyn BackgroundService + Send + Sync>>,
}

/// Outlier ejection settings, compiled from `passive_health`.
struct PassiveHealth {
    threshold: u32,
    cooldown_us: u64,
    failure_statuses: Vec<u16>,
}

/// Decrements a backend's in-flight count when the request is done.
pub struct InflightGuard {
    upstream: Arc<Upstream>,
    slot: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.upstream.backends[self.slot]
            .inflight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// Builds the pool (its health-check loop, if any, in [`background`](Self::background)).
    pub fn build(
        name: &str,
        cfg: &UpstreamConfig,
        idle_timeout: Option<Duration>,
    ) -> Result<Upstream, ConfigError> {
        let path = KeyPath::root().key("upstreams").key(name);
        let mut set = BTreeSet::new();
        let mut backends = Vec::with_capacity(cfg.servers.len());
        for (i, server) in cfg.servers.iter().enumerate() {
            let sp = path.key("servers").index(i);
            let addr: SocketAddr = crate::config::socket_addr(&sp.key("address"), &server.address)?;
            let mut backend = Backend::new_with_weight(&server.address, server.weight)
                .map_err(|e| ConfigError::at(&sp.key("address"), e.to_string()))?;
            backend.ext.insert(SlotIndex(i));
            set.insert(backend.clone());
            backends.push(BackendSlot {
                addr,
                weight: server.weight,
                inflight: AtomicUsize::new(0),
                failures: AtomicU32::new(0),
                ejected_until: AtomicU64::new(0),
                peer: peer(cfg, addr, idle_timeout),
                host: host_value(cfg, &server.address).map_err(|e| {
                    let key = match cfg.tls {
                        Some(_) => path.key("tls").key("sni"),
                        None => sp.key("address"),
                    };
                    ConfigError::at(&key, e)
                })?,
                backend,
            });
        }
        let check = health::build(cfg)
            .map_err(|e| ConfigError::at(&path.key("health_check"), e.to_string()))?;
        let interval = cfg
            .health_check
            .as_ref()
            .map(|hc| Duration::from_millis(hc.interval_ms));
        let mut background: Option<Arc<dyn BackgroundService + Send + Sync>> = None;
        macro_rules! balancer {
            ($alg:ty) => {{
                let lb = Arc::new(balancer::<$alg>(set, check, interval));
                if interval.is_some() {
                    background = Some(lb.clone());
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
                backends.iter().map(|b| b.backend.clone()).collect(),
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
        let upstream = Upstream {
            name: name.into(),
            breaker: cfg.circuit_breaker.as_ref().map(CircuitBreaker::new),
            passive,
            retries: cfg.retries,
            hash_key,
            health_checked: interval.is_some(),
            backends,
            per_worker_pools: false,
            selector,
            background,
        };
        Ok(upstream)
    }

    /// Picks a ready backend not yet tried by this request; `key` matters only for hashing.
    pub fn select(&self, key: &[u8], tried: &[usize]) -> Option<usize> {
        if self.backends.len() == 1 {
            // Nothing to choose between (an ejected lone backend still serves, see below).
            return (!tried.contains(&0) && self.is_healthy(0)).then_some(0);
        }
        let now = now_us();
        let load = |i: usize| self.backends[i].inflight.load(Ordering::Relaxed);
        self.selector
            .select(
                key,
                |i| !tried.contains(&i) && !self.is_ejected(i, now),
                load,
            )
            // Ejecting every backend would turn a flaky upstream into a dead one, so when
            // nothing else is left the ejected ones serve (Envoy's panic threshold, at 100%).
            .or_else(|| self.selector.select(key, |i| !tried.contains(&i), load))
    }

    /// Whether a backend other than `current` and those in `tried` could take a retry.
    pub fn has_alternative(&self, tried: &[usize], current: usize) -> bool {
        let now = now_us();
        (0..self.backends.len()).any(|i| {
            i != current && !tried.contains(&i) && self.is_healthy(i) && !self.is_ejected(i, now)
        })
    }

    /// Counts a request against backend `slot` until the guard drops.
    pub fn begin(self: &Arc<Self>, slot: usize) -> InflightGuard {
        self.backends[slot].inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard {
            upstream: self.clone(),
            slot,
        }
    }

    /// A fresh peer for backend `slot`, with the pool's timeouts and TLS settings.
    pub fn peer(&self, slot: usize) -> Box<HttpPeer> {
        let mut peer = Box::new(self.backends[slot].peer.clone());
        if self.per_worker_pools {
            // Part of the pool key, so a connection is only reused by the worker that opened it.
            peer.group_key = worker_id();
        }
        peer
    }

    /// Whether backend `slot` is passively ejected at `now` (policy-clock microseconds).
    pub fn is_ejected(&self, slot: usize, now: u64) -> bool {
        self.backends[slot].ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether an upstream status counts as a live-traffic failure of the backend.
    pub fn is_backend_failure_status(&self, status: u16) -> bool {
        self.passive
            .as_ref()
            .is_some_and(|p| p.failure_statuses.contains(&status))
    }

    /// Records a live-traffic outcome for backend `slot`, ejecting it after a run of failures.
    pub fn record_backend(&self, slot: usize, failed: bool) {
        let Some(p) = &self.passive else { return };
        let b = &self.backends[slot];
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

    /// The Host header to send to backend `slot` when the client's is not preserved.
    pub fn host_header(&self, slot: usize) -> &HeaderValue {
        &self.backends[slot].host
    }

    /// Whether backend `slot` is currently healthy.
    pub fn is_healthy(&self, slot: usize) -> bool {
        self.selector.ready(&self.backends[slot].backend)
    }

    /// Number of backends that are currently healthy.
    pub fn healthy_count(&self) -> usize {
        (0..self.backends.len())
            .filter(|&i| self.is_healthy(i))
            .count()
    }
}

fn balancer<S>(
    set: BTreeSet<Backend>,
    check: Option<Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync>>,
    interval: Option<Duration>,
) -> LoadBalancer<S>
where
    S: BackendSelection + 'static,
    S::Iter: BackendIter,
{
    let mut backends = Backends::new(Static::new(set));
    if let Some(check) = check {
        backends.set_health_check(check);
    }
    let mut lb = LoadBalancer::<S>::from_backends(backends);
    lb.health_check_frequency = interval;
    lb.parallel_health_check = true;
    // Static discovery resolves nothing and never waits, so the first update completes at once.
    let _ = futures::FutureExt::now_or_never(lb.update());
    lb
}

fn peer(cfg: &UpstreamConfig, addr: SocketAddr, idle_timeout: Option<Duration>) -> HttpPeer {
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
fn host_value(cfg: &UpstreamConfig, address: &str) -> Result<HeaderValue, String> {
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
