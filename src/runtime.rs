//! The compiled runtime model: what the hot path reads, built once from a validated [`Config`].

use crate::access_log::AccessLog;
use crate::admin::AdminAuth;
use crate::cache::{CacheStore, RouteCache};
use crate::compression::CompressionPolicy;
use crate::config::{Config, ConfigError, ForwardedFor, KeyPath, RateLimitConfig, UpstreamConfig};
use crate::edge::PathPolicy;
use crate::metrics::{Metrics, MetricsHub};
use crate::plugin::{PluginChain, Registry};
use crate::policy::{RouteGuards, TrustedProxies};
use crate::routing::{Action, RouteId, RouteTable};
use crate::upstream::{Mirror, Upstream, UpstreamId};
use pingora_core::services::listening::ConnectionLimit;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One route, compiled: everything the hot path needs about it, in one place.
pub struct CompiledRoute {
    /// The route's name from the config (metrics, logs, `$route`).
    pub name: Arc<str>,
    /// What the route does: proxy (to one upstream or a split) or answer.
    pub action: Action,
    /// Its rate limit and concurrency cap.
    pub guards: RouteGuards,
    /// Its cache settings, when it caches.
    pub cache: Option<RouteCache>,
    /// Its compression, when it compresses.
    pub compression: Option<CompressionPolicy>,
    /// Its plugins (global ones first), in phase order.
    pub plugins: PluginChain,
    /// Its request mirror.
    pub mirror: Option<Mirror>,
}

/// Immutable state shared by the proxy and the admin listener.
pub struct Runtime {
    /// The route matcher: host and path indexes, method and header conditions.
    pub table: RouteTable,
    /// The compiled routes, by [`RouteId`].
    pub routes: Box<[CompiledRoute]>,
    /// Upstream pools, by [`UpstreamId`].
    pub upstreams: Box<[Arc<Upstream>]>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// The response cache, when any route caches.
    pub cache: Option<CacheStore>,
    /// Whether any route compresses (Pingora's compression module is added only then).
    pub any_compression: bool,
    /// Downstream timeouts and limits applied to every request.
    pub downstream: DownstreamSettings,
    /// Prometheus series, recorded at the end of every request.
    pub metrics: Metrics,
    /// The access log, when `access_log.enabled`.
    pub access_log: Option<Arc<AccessLog>>,
    /// `server.max_connections`, shared by every proxy listener.
    pub connections: Arc<ConnectionLimit>,
    /// `X-Forwarded-Port` values of the listeners, rendered once.
    pub listener_ports: Box<[(u16, http::HeaderValue)]>,
    /// The admin listener's credentials and allowed names (applied on reload).
    pub admin: Option<AdminAuth>,
    config: Arc<Config>,
    idle_timeout_override: Option<Duration>,
    /// Per listener, a digest of its TLS certificate and key files as they were when this
    /// runtime was compiled: a reload compares them, because listeners load their certificate
    /// only at start.
    tls_digests: Box<[Option<String>]>,
    /// The tracer, when `tracing.enabled` (a reload may keep the previous one, see
    /// [`crate::tracing::attach`]).
    pub tracing: Option<Arc<crate::tracing::Tracer>>,
    /// The Redis behind `scope: cluster` limits, when `redis:` is configured; an `Arc` so a
    /// reload with the same section can keep its connections.
    pub redis: Option<Arc<crate::redis::RedisBackend>>,
}

/// Per-request downstream settings taken from `server:`.
#[derive(Debug, Clone, Copy)]
pub struct DownstreamSettings {
    /// Idle time allowed between keep-alive requests.
    pub keepalive_timeout_secs: u64,
    /// Requests allowed on one keep-alive connection (None = unlimited).
    pub keepalive_requests: Option<u32>,
    /// Timeout of each request-body read.
    pub body_read_timeout: Duration,
    /// Timeout of each header read.
    pub header_read_timeout: Duration,
    /// Largest request header block accepted (431 beyond it).
    pub max_header_bytes: usize,
    /// How request paths are normalized before routing.
    pub paths: PathPolicy,
    /// What an untrusted peer's `X-Forwarded-For` becomes upstream.
    pub forwarded_for: ForwardedFor,
}

impl Runtime {
    /// A compiled route.
    pub fn route(&self, id: RouteId) -> &CompiledRoute {
        &self.routes[id.index()]
    }

    /// An upstream pool.
    pub fn upstream(&self, id: UpstreamId) -> &Arc<Upstream> {
        &self.upstreams[id.index()]
    }

    /// Compiles the config into a first runtime.
    pub fn build(
        config: &Config,
        registry: &Registry,
        idle_timeout_override: Option<Duration>,
    ) -> Result<Runtime, ConfigError> {
        let runtime = Runtime::compile(config, registry, idle_timeout_override, None)?;
        // Nothing else is live yet: scrapes may follow this one at once.
        runtime.go_live();
        Ok(runtime)
    }

    /// Compiles a reloaded config, keeping the state of `previous` that the change leaves
    /// valid: unchanged upstreams (health, breaker, ejections, in-flight counts), unchanged
    /// rate limits' buckets, the cache store, the metrics and the connection limit.
    pub fn rebuild(
        config: &Config,
        registry: &Registry,
        idle_timeout_override: Option<Duration>,
        previous: &Runtime,
    ) -> Result<Runtime, ConfigError> {
        Runtime::compile(config, registry, idle_timeout_override, Some(previous))
    }

    fn compile(
        config: &Config,
        registry: &Registry,
        idle_timeout_override: Option<Duration>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, ConfigError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut index = HashMap::with_capacity(config.upstreams.len());
        for (name, cfg) in &config.upstreams {
            let up = match previous
                .and_then(|p| p.same_upstream(name, cfg, config, idle_timeout_override))
            {
                Some(kept) => kept,
                None => {
                    let replaced = previous
                        .and_then(|p| p.upstream_named(name))
                        .map(|(up, cfg)| (&**up, cfg));
                    let mut up = Upstream::build(name, cfg, idle_timeout_override, replaced)?;
                    up.per_worker_pools = !config.server.work_stealing;
                    up.preserve_header_case = config.server.preserve_header_case;
                    Arc::new(up)
                }
            };
            index.insert(name.as_str(), upstreams.len());
            upstreams.push(up);
        }
        let table = RouteTable::build(&config.routes)?;
        let kept = |i: usize| previous.and_then(|p| p.kept_limiter(config, i));
        let mut guards = crate::policy::build_route_guards(config, kept)?;
        if let Some(p) = previous {
            p.keep_in_flight(config, &mut guards);
        }
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(|(i, msg)| {
                ConfigError::at(&KeyPath::root().key("trusted_proxies").index(i), msg)
            })?;
        let plugins = build_plugins(config, registry, &paths_policy(&config.server))?;
        let at_cache = |e: pingora_error::BError| {
            ConfigError::at(&KeyPath::root().key("cache"), format!("cache: {e}"))
        };
        // A store, once built, lives as long as the process (Pingora holds it as `'static`):
        // a reload keeps it even when no route caches any more, so its entries can still be
        // purged and are served again if caching comes back, instead of a second store.
        let cache = match previous.and_then(|p| p.cache.as_ref()) {
            Some(kept) => Some(kept.reconfigure(&config.cache).map_err(at_cache)?),
            None if config.routes.iter().any(|r| r.cache.enabled) => {
                Some(CacheStore::build(&config.cache).map_err(at_cache)?)
            }
            None => None,
        };
        let s = &config.server;
        let downstream = DownstreamSettings {
            keepalive_timeout_secs: s.keepalive_timeout_seconds,
            keepalive_requests: (s.keepalive_requests > 0).then_some(s.keepalive_requests),
            body_read_timeout: Duration::from_millis(s.client_body_timeout_ms),
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            max_header_bytes: s.max_header_bytes,
            paths: paths_policy(s),
            forwarded_for: config.forwarded_for,
        };
        // Listeners hold the limit from start-up; `server.max_connections` needs an upgrade.
        let connections = match previous {
            Some(p) => p.connections.clone(),
            None => ConnectionLimit::new(s.max_connections),
        };
        let hub = match previous {
            Some(p) => p.metrics.hub().clone(),
            None => MetricsHub::new(&connections)
                .map_err(|e| ConfigError::at(&KeyPath::root(), format!("metrics: {e}")))?,
        };
        let metrics = Metrics::new(&hub, &table, &upstreams);
        // Parses the section only: nothing connects until the first cluster-limited request.
        let redis = match &config.redis {
            Some(r) => Some(
                crate::redis::RedisBackend::reuse_or_new(
                    previous.and_then(|p| p.redis.as_ref()),
                    r,
                )
                .map_err(|e| ConfigError::at(&KeyPath::root().key("redis"), e))?,
            ),
            None => None,
        };
        let routes_path = KeyPath::root().key("routes");
        let upstream_id = |name: &str| index.get(name).copied().map(UpstreamId::new);
        let mut routes = Vec::with_capacity(config.routes.len());
        for ((i, r), (guards, plugins)) in config
            .routes
            .iter()
            .enumerate()
            .zip(guards.into_iter().zip(plugins))
        {
            let p = routes_path.index(i);
            let mirror = match &r.mirror {
                Some(m) => {
                    let up = upstream_id(&m.upstream).ok_or_else(|| {
                        ConfigError::at(&p.key("mirror").key("upstream"), "unknown upstream")
                    })?;
                    Some(Mirror::new(
                        upstreams[up.index()].clone(),
                        m,
                        metrics.mirror_counters(&r.name),
                    ))
                }
                None => None,
            };
            routes.push(CompiledRoute {
                name: r.name.as_str().into(),
                action: Action::build(r, &p, upstream_id)?,
                guards,
                cache: RouteCache::build(&r.cache, &p.key("cache"))?,
                compression: CompressionPolicy::build(
                    &config.compression,
                    &r.compression,
                    &p.key("compression"),
                )?,
                plugins,
                mirror,
            });
        }
        let tracing =
            crate::tracing::attach(previous.and_then(|p| p.tracing.as_ref()), &config.tracing)?;
        let access_log = match previous {
            Some(p) if p.config.access_log == config.access_log => p.access_log.clone(),
            _ => open_access_log(config, &hub)?,
        };
        Ok(Runtime {
            table,
            any_compression: routes.iter().any(|r| r.compression.is_some()),
            routes: routes.into(),
            upstreams: upstreams.into(),
            trusted_proxies,
            cache,
            downstream,
            metrics,
            access_log,
            connections,
            listener_ports: config
                .listeners
                .iter()
                .filter_map(|l| l.address.parse::<std::net::SocketAddr>().ok())
                .map(|a| (a.port(), http::HeaderValue::from(a.port())))
                .collect(),
            admin: config.admin.as_ref().map(AdminAuth::new),
            tls_digests: crate::reload::tls_digests(config).into(),
            config: Arc::new(config.clone()),
            idle_timeout_override,
            tracing,
            redis,
        })
    }

    /// Makes this runtime the one scrapes follow, and applies what it shares with the runtime
    /// it replaces (the cache's size limit).
    pub fn go_live(&self) {
        if let Some(Err(e)) = self.cache.as_ref().map(CacheStore::go_live) {
            // Moving LRU records is in-memory serialization; the entries stay in the store.
            log::error!("cache: resizing the eviction manager failed: {e}");
        }
        let tracing = self.tracing.as_ref().map(|t| t.stats());
        self.metrics.go_live(
            &self.upstreams,
            self.cache.as_ref(),
            tracing,
            self.redis.as_ref(),
        );
    }

    /// Digests of the listeners' TLS files when this runtime was compiled.
    pub fn tls_digests(&self) -> &[Option<String>] {
        &self.tls_digests
    }

    /// The config this runtime was compiled from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// This runtime's upstream `name`, when a reload may keep it: same config, same pool
    /// settings, same idle-timeout override.
    fn same_upstream(
        &self,
        name: &str,
        cfg: &UpstreamConfig,
        config: &Config,
        idle_timeout_override: Option<Duration>,
    ) -> Option<Arc<Upstream>> {
        let (up, old) = self.upstream_named(name)?;
        let unchanged = old == cfg
            && self.config.server.work_stealing == config.server.work_stealing
            && self.idle_timeout_override == idle_timeout_override;
        unchanged.then(|| up.clone())
    }

    /// This runtime's upstream `name` with its config, for a rebuilt upstream to take over
    /// the state its changes leave meaningful.
    fn upstream_named(&self, name: &str) -> Option<(&Arc<Upstream>, &UpstreamConfig)> {
        let cfg = self.config.upstreams.get(name)?;
        let up = self.upstreams.iter().find(|u| &*u.name == name)?;
        Some((up, cfg))
    }

    /// The bucket table of the route `config.routes[i]` had here, when a reload leaves what
    /// its buckets mean unchanged, so a client cannot reset its allowance by waiting for a
    /// reload.
    fn kept_limiter(&self, config: &Config, i: usize) -> Option<Arc<crate::policy::RateLimiter>> {
        let name = &config.routes.get(i)?.name;
        let j = self.route_index(name)?;
        let unchanged = effective_limit(config, i).map(buckets)
            == effective_limit(&self.config, j).map(buckets);
        let old = self.route(RouteId::new(j)).guards.rate.as_ref()?;
        unchanged.then(|| old.limiter.clone())
    }

    /// Where the route called `name` was in this runtime's config, so a reload can find
    /// what a route of the same name kept.
    fn route_index(&self, name: &str) -> Option<usize> {
        self.config.routes.iter().position(|o| o.name == name)
    }

    /// Carries the in-flight counters of routes whose `max_in_flight` a reload left as it was,
    /// so requests still running on this runtime count against the same cap.
    fn keep_in_flight(&self, config: &Config, guards: &mut [RouteGuards]) {
        for (r, g) in config.routes.iter().zip(guards.iter_mut()) {
            let Some(j) = self.route_index(&r.name) else {
                continue;
            };
            if r.max_in_flight == self.config.routes[j].max_in_flight {
                g.in_flight
                    .clone_from(&self.route(RouteId::new(j)).guards.in_flight);
            }
        }
    }
}

/// What a limit's buckets mean: a change of any of these makes the old buckets wrong, while
/// `status`, `headers` or `failure_mode` change only the answer.
fn buckets(
    c: &RateLimitConfig,
) -> (
    f64,
    u64,
    &crate::policy::LimitKey,
    usize,
    u8,
    crate::config::LimitScope,
) {
    (
        c.requests_per_second,
        c.burst,
        &c.key,
        c.slots,
        c.ipv6_prefix,
        c.scope,
    )
}

/// The `rate_limit:` that applies to route `i`: its own, or the global default.
fn effective_limit(config: &Config, i: usize) -> Option<&RateLimitConfig> {
    config
        .routes
        .get(i)?
        .rate_limit
        .as_ref()
        .or(config.rate_limit.as_ref())
}

fn open_access_log(
    config: &Config,
    hub: &MetricsHub,
) -> Result<Option<Arc<AccessLog>>, ConfigError> {
    let a = &config.access_log;
    if !a.enabled {
        return Ok(None);
    }
    let log = AccessLog::open(a, hub.access_log_dropped().clone()).map_err(|e| {
        ConfigError::at(
            &KeyPath::root().key("access_log").key("path"),
            format!("cannot open {}: {e}", a.path),
        )
    })?;
    Ok(Some(Arc::new(log)))
}

fn paths_policy(s: &crate::config::ServerSection) -> PathPolicy {
    PathPolicy {
        normalize: s.normalize_path,
        merge_slashes: s.merge_slashes,
        escaped_slashes: s.escaped_slashes,
        semicolons: s.path_semicolons,
    }
}

/// Builds the global plugins once and every route's chain on top of them.
fn build_plugins(
    config: &Config,
    registry: &Registry,
    paths: &PathPolicy,
) -> Result<Vec<PluginChain>, ConfigError> {
    let root = KeyPath::root();
    let global = registry.build_list(&config.plugins, &root.key("plugins"), paths)?;
    let global_rewrite = config.plugins.iter().any(is_rewrite);
    config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let p = root.key("routes").index(i);
            if r.strip_prefix && (global_rewrite || r.plugins.iter().any(is_rewrite)) {
                // Both change the path sent upstream; which runs first would be a trap.
                return Err(ConfigError::at(
                    &p.key("strip_prefix"),
                    "cannot be combined with a rewrite plugin (fold the prefix into its regex)",
                ));
            }
            registry.chain(&global, &r.plugins, &p.key("plugins"), paths)
        })
        .collect()
}

fn is_rewrite(spec: &crate::config::PluginSpec) -> bool {
    matches!(spec, crate::config::PluginSpec::Rewrite(_))
}
