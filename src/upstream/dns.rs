//! DNS service discovery: `servers[].address` given as `name:port`, resolved at start and
//! again every `dns_refresh_seconds` (or at the record's TTL when shorter), through
//! pingora-load-balancing's [`ServiceDiscovery`], so the upstream's load balancer loop swaps
//! the backend set and health-checks the addresses DNS brings in.
//!
//! Each resolved address becomes a [`BackendSlot`]. A slot whose address and weight stay is
//! carried over whole (in-flight count, passive health, pooled connections, active health),
//! so only the addresses that come and go change anything. A failed lookup keeps the name's
//! last good addresses.

use super::pool::{host_value, peer, BackendSlot};
use crate::config::{ConfigError, KeyPath, ServerAddress, UpstreamConfig, MAX_WEIGHT};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use http::HeaderValue;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `dns_refresh_seconds` when unset.
pub const DEFAULT_REFRESH_SECS: u64 = 30;

/// How often the load balancer loop asks discovery; a lookup only runs when one is due, so
/// this is the resolution of TTL-driven refreshes.
const TICK: Duration = Duration::from_secs(1);

/// Longest a lookup of one name may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the start-up lookups (the resolver's own timeouts end them sooner).
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/status` and `/metrics` read about an upstream's DNS names.
pub struct DnsState {
    /// The current backend slots, swapped whole when the set changes.
    pub(crate) slots: Arc<ArcSwap<Vec<Arc<BackendSlot>>>>,
    names: Box<[NameState]>,
    lookups_ok: AtomicU64,
    lookups_error: AtomicU64,
}

/// One DNS name of an upstream and what it last resolved to.
pub struct NameState {
    /// The server's address as configured, `name:port`.
    pub name: String,
    host: String,
    port: u16,
    addresses: ArcSwap<Vec<SocketAddr>>,
    /// Unix time of the last lookup, in milliseconds (0: none yet).
    last_lookup_ms: AtomicU64,
    /// The last lookup's error, cleared by the next success; read by `/status` only.
    last_error: Mutex<Option<String>>,
}

impl NameState {
    /// The last good addresses of this name.
    pub fn addresses(&self) -> Arc<Vec<SocketAddr>> {
        self.addresses.load_full()
    }

    /// When the last lookup ran, successful or not.
    pub fn last_lookup(&self) -> Option<SystemTime> {
        match self.last_lookup_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// The last lookup's error, when it failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, result: &Result<Lookup, String>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        self.last_lookup_ms.store(now.max(1), Ordering::Relaxed);
        let mut err = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(found) => {
                *err = None;
                let addrs: Vec<SocketAddr> = found
                    .ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, self.port))
                    .collect();
                self.addresses.store(Arc::new(addrs));
            }
            Err(e) => *err = Some(e.clone()),
        }
    }
}

impl DnsState {
    /// The upstream's DNS names, in config order.
    pub fn names(&self) -> &[NameState] {
        &self.names
    }

    /// Lookups that answered with addresses, and lookups that failed.
    pub fn lookups(&self) -> (u64, u64) {
        (
            self.lookups_ok.load(Ordering::Relaxed),
            self.lookups_error.load(Ordering::Relaxed),
        )
    }

    /// Distinct addresses in the current backend set.
    pub fn resolved_addresses(&self) -> usize {
        self.slots.load().len()
    }
}

/// One configured server: a fixed address, or a name (an index into [`DnsState::names`]).
enum Target {
    Ip(SocketAddr),
    Name(usize),
}

struct Server {
    target: Target,
    weight: usize,
    host: HeaderValue,
}

/// A successful lookup: its addresses and how long the answer may be kept.
struct Lookup {
    ips: Vec<IpAddr>,
    valid_until: Instant,
}

/// The [`ServiceDiscovery`] of an upstream with DNS names.
pub(crate) struct DnsDiscovery {
    upstream: Arc<str>,
    servers: Vec<Server>,
    state: Arc<DnsState>,
    refresh: Duration,
    setup: (ResolverConfig, ResolverOpts),
    /// Built on first use inside the background runtime, whose tasks it then spawns on.
    resolver: OnceLock<TokioResolver>,
    template: HttpPeer,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The first call answers with the start-up lookup.
    seeded: bool,
    due: Instant,
    next_id: usize,
    by_key: HashMap<(SocketAddr, usize), Arc<BackendSlot>>,
    backends: BTreeSet<Backend>,
}

impl DnsDiscovery {
    /// Resolves every name once (failing when one has no address) and returns the discovery
    /// seeded with the answer, and the state `/status` reads.
    pub(crate) fn start(
        upstream: &str,
        cfg: &UpstreamConfig,
        path: &KeyPath,
        idle_timeout: Option<Duration>,
    ) -> Result<(DnsDiscovery, Arc<DnsState>), ConfigError> {
        let setup = resolver_setup(cfg).map_err(|e| {
            // Without dns_servers the system config was at fault: point at the first name.
            let key = match cfg.dns_servers.is_empty() {
                true => cfg
                    .servers
                    .iter()
                    .position(|s| matches!(s.address, ServerAddress::Name { .. }))
                    .map_or(path.key("servers"), |i| {
                        path.key("servers").index(i).key("address")
                    }),
                false => path.key("dns_servers"),
            };
            ConfigError::at(&key, e)
        })?;
        let mut names = Vec::new();
        let mut servers = Vec::with_capacity(cfg.servers.len());
        for (i, s) in cfg.servers.iter().enumerate() {
            let text = s.address.to_string();
            let host = host_value(cfg, &text).map_err(|e| {
                let key = match cfg.tls {
                    Some(_) => path.key("tls").key("sni"),
                    None => path.key("servers").index(i).key("address"),
                };
                ConfigError::at(&key, e)
            })?;
            let target = match &s.address {
                ServerAddress::Ip(a) => Target::Ip(*a),
                ServerAddress::Name { host, port } => {
                    names.push(NameState {
                        name: text,
                        host: host.clone(),
                        port: *port,
                        addresses: ArcSwap::from_pointee(Vec::new()),
                        last_lookup_ms: AtomicU64::new(0),
                        last_error: Mutex::new(None),
                    });
                    Target::Name(names.len() - 1)
                }
            };
            servers.push(Server {
                target,
                weight: s.weight,
                host,
            });
        }
        let hosts: Vec<String> = names.iter().map(|n| n.host.clone()).collect();
        let answers = resolve_at_start(hosts, setup.clone())
            .map_err(|e| ConfigError::at(&path.key("servers"), e))?;
        let refresh = Duration::from_secs(cfg.dns_refresh_seconds.unwrap_or(DEFAULT_REFRESH_SECS));
        let state = Arc::new(DnsState {
            slots: Arc::new(ArcSwap::from_pointee(Vec::new())),
            names: names.into(),
            lookups_ok: AtomicU64::new(0),
            lookups_error: AtomicU64::new(0),
        });
        let mut due = Instant::now() + refresh;
        for (n, answer) in answers.into_iter().enumerate() {
            let i = name_server_index(&servers, n);
            let key = path.key("servers").index(i).key("address");
            let name = &state.names[n];
            match &answer {
                Ok(found) => due = due.min(found.valid_until),
                Err(e) => {
                    return Err(ConfigError::at(
                        &key,
                        format!("cannot resolve {}: {e}", name.name),
                    ))
                }
            }
            name.record(&answer);
            state.lookups_ok.fetch_add(1, Ordering::Relaxed);
        }
        let discovery = DnsDiscovery {
            upstream: upstream.into(),
            servers,
            state: state.clone(),
            refresh,
            setup,
            resolver: OnceLock::new(),
            template: peer(cfg, SocketAddr::from(([0, 0, 0, 0], 0)), idle_timeout),
            inner: Mutex::new(Inner {
                seeded: true,
                due,
                next_id: 0,
                by_key: HashMap::new(),
                backends: BTreeSet::new(),
            }),
        };
        discovery.rebuild(&mut discovery.lock());
        for n in state.names() {
            log::info!(
                "upstream {upstream}: {} resolves to {}",
                n.name,
                list(&n.addresses())
            );
        }
        Ok((discovery, state))
    }

    /// How often the load balancer loop should call [`ServiceDiscovery::discover`].
    pub(crate) fn tick(&self) -> Duration {
        TICK.min(self.refresh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Only the upstream's one background loop takes it; a panic there leaves valid data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the backend set from the servers and their names' last good addresses;
    /// returns whether it changed.
    fn rebuild(&self, inner: &mut Inner) -> bool {
        // address -> (weight, server whose Host header it uses: the first that reaches it)
        let mut weights: BTreeMap<SocketAddr, (usize, usize)> = BTreeMap::new();
        for (si, s) in self.servers.iter().enumerate() {
            let addrs = match s.target {
                Target::Ip(a) => Arc::new(vec![a]),
                Target::Name(n) => self.state.names[n].addresses(),
            };
            let mut addrs = (*addrs).clone();
            addrs.sort();
            addrs.dedup();
            for (k, a) in addrs.iter().enumerate() {
                weights.entry(*a).or_insert((0, si)).0 += split_weight(s.weight, addrs.len(), k);
            }
        }
        let mut by_key = HashMap::with_capacity(weights.len());
        let mut list = Vec::with_capacity(weights.len());
        for (addr, (weight, si)) in weights {
            let weight = weight.min(MAX_WEIGHT);
            let slot = match inner.by_key.get(&(addr, weight)) {
                Some(slot) => slot.clone(),
                None => {
                    inner.next_id += 1;
                    let mut peer = self.template.clone();
                    peer._address = pingora_core::protocols::l4::socket::SocketAddr::Inet(addr);
                    Arc::new(BackendSlot::new(
                        inner.next_id,
                        addr,
                        weight,
                        self.servers[si].host.clone(),
                        peer,
                    ))
                }
            };
            by_key.insert((addr, weight), slot.clone());
            list.push(slot);
        }
        let changed = by_key.len() != inner.by_key.len()
            || by_key.keys().any(|k| !inner.by_key.contains_key(k));
        if changed {
            inner.backends = list.iter().map(BackendSlot::marked_backend).collect();
            inner.by_key = by_key;
            self.state.slots.store(Arc::new(list));
        }
        changed
    }

    async fn lookup_all(&self) -> Instant {
        let resolver = self
            .resolver
            .get_or_init(|| build_resolver(self.setup.clone()));
        let lookups = self.state.names.iter().map(|n| lookup(resolver, &n.host));
        let answers = futures::future::join_all(lookups).await;
        let mut due = Instant::now() + self.refresh;
        for (n, answer) in self.state.names.iter().zip(answers) {
            match &answer {
                Ok(found) => {
                    due = due.min(found.valid_until);
                    self.state.lookups_ok.fetch_add(1, Ordering::Relaxed);
                    let new: Vec<SocketAddr> = found
                        .ips
                        .iter()
                        .map(|ip| SocketAddr::new(*ip, n.port))
                        .collect();
                    let old = n.addresses();
                    if sorted(&old) != sorted(&new) {
                        log::info!(
                            "upstream {}: {} now resolves to {} (was {})",
                            self.upstream,
                            n.name,
                            list(&new),
                            list(&old)
                        );
                    }
                }
                Err(e) => {
                    self.state.lookups_error.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "upstream {}: looking up {} failed, keeping its last {} address(es): {e}",
                        self.upstream,
                        n.name,
                        n.addresses().len()
                    );
                }
            }
            n.record(&answer);
        }
        due
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        {
            let mut inner = self.lock();
            if inner.seeded || Instant::now() < inner.due {
                inner.seeded = false;
                return Ok((inner.backends.clone(), HashMap::new()));
            }
        }
        // No lock is held across the lookups: the loop may drop this future on shutdown.
        let due = self.lookup_all().await;
        let mut inner = self.lock();
        inner.due = due;
        self.rebuild(&mut inner);
        Ok((inner.backends.clone(), HashMap::new()))
    }
}

/// The weight of the `k`-th of `n` addresses of a server of weight `w`: `w / n`, the first
/// `w % n` addresses (in address order) one more, and never less than 1.
fn split_weight(w: usize, n: usize, k: usize) -> usize {
    let n = n.max(1);
    (w / n + usize::from(k < w % n)).max(1)
}

/// Which server holds the `n`-th name.
fn name_server_index(servers: &[Server], n: usize) -> usize {
    servers
        .iter()
        .position(|s| matches!(s.target, Target::Name(i) if i == n))
        .unwrap_or(0)
}

fn sorted(a: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v = a.to_vec();
    v.sort();
    v
}

fn list(a: &[SocketAddr]) -> String {
    if a.is_empty() {
        return "nothing".into();
    }
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolver's servers and options: `dns_servers` when given, else `/etc/resolv.conf`.
fn resolver_setup(cfg: &UpstreamConfig) -> Result<(ResolverConfig, ResolverOpts), String> {
    let (conf, mut opts) = if cfg.dns_servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("reading the system resolver config (/etc/resolv.conf): {e}"))?
    } else {
        let mut group = NameServerConfigGroup::new();
        for a in &cfg.dns_servers {
            group.push(NameServerConfig::new(*a, Protocol::Udp));
            group.push(NameServerConfig::new(*a, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        // Only the listed servers answer: no /etc/hosts.
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(1);
        opts.attempts = 1;
        (ResolverConfig::from_parts(None, vec![], group), opts)
    };
    // Every due refresh asks the servers: our own schedule already honours the TTL, and a
    // cache would hold an answer past `dns_refresh_seconds` when the TTL is longer.
    opts.cache_size = 0;
    Ok((conf, opts))
}

fn build_resolver((conf, opts): (ResolverConfig, ResolverOpts)) -> TokioResolver {
    hickory_resolver::Resolver::builder_with_config(conf, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

async fn lookup(resolver: &TokioResolver, host: &str) -> Result<Lookup, String> {
    // The resolver's per-query timeout multiplies by servers, query types and search names;
    // this bounds the whole lookup, so an unreachable server is noticed within one refresh.
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(host))
        .await
        .map_err(|_| format!("no answer within {} s", LOOKUP_TIMEOUT.as_secs()))?;
    match answer {
        Ok(found) => {
            let ips: Vec<IpAddr> = found.iter().collect();
            if ips.is_empty() {
                return Err("no addresses".into());
            }
            Ok(Lookup {
                ips,
                valid_until: found.valid_until(),
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Looks `hosts` up on a thread of its own with a current-thread runtime: the caller may be
/// start-up (no runtime yet) or a runtime's blocking thread, where none may be created.
fn resolve_at_start(
    hosts: Vec<String>,
    setup: (ResolverConfig, ResolverOpts),
) -> Result<Vec<Result<Lookup, String>>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("dns-start".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(format!("starting the DNS runtime: {e}")));
                    return;
                }
            };
            let answers = rt.block_on(async {
                let resolver = build_resolver(setup);
                futures::future::join_all(hosts.iter().map(|h| lookup(&resolver, h))).await
            });
            let _ = tx.send(Ok(answers));
        })
        .map_err(|e| format!("starting the DNS lookup thread: {e}"))?;
    rx.recv_timeout(START_TIMEOUT).map_err(|_| {
        format!(
            "DNS lookups at start did not finish within {} s",
            START_TIMEOUT.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::split_weight;

    #[test]
    fn weight_is_split_with_the_remainder_to_the_first_addresses() {
        let split = |w, n| (0..n).map(|k| split_weight(w, n, k)).collect::<Vec<_>>();
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(9, 3), [3, 3, 3]);
        assert_eq!(split(1, 3), [1, 1, 1]);
        assert_eq!(split(5, 1), [5]);
    }
}
