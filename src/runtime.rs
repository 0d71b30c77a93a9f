//! The compiled runtime model: what the hot path reads, built once from a validated [`Config`].

use crate::access_log::AccessLog;
use crate::cache::{CacheStore, RouteCache};
use crate::compression::CompressionPolicy;
use crate::config::{Config, ConfigError, ForwardedFor, KeyPath};
use crate::edge::PathPolicy;
use crate::metrics::Metrics;
use crate::plugin::{PluginChain, Registry};
use crate::policy::{RouteGuards, TrustedProxies};
use crate::routing::{Action, RouteId, RouteTable};
use crate::upstream::{HealthService, Mirror, Upstream, UpstreamId};
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

    /// Compiles the config; returns the runtime and the health-check services to run.
    pub fn build(
        config: &Config,
        registry: &Registry,
        idle_timeout_override: Option<Duration>,
    ) -> Result<(Runtime, Vec<HealthService>), ConfigError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut index = HashMap::with_capacity(config.upstreams.len());
        let mut services = Vec::new();
        for (name, cfg) in &config.upstreams {
            let (mut up, svc) = Upstream::build(name, cfg, idle_timeout_override)?;
            up.per_worker_pools = !config.server.work_stealing;
            index.insert(name.as_str(), upstreams.len());
            upstreams.push(Arc::new(up));
            services.extend(svc);
        }
        let table = RouteTable::build(&config.routes)?;
        let guards = crate::policy::build_route_guards(config)?;
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(|(i, msg)| {
                ConfigError::at(&KeyPath::root().key("trusted_proxies").index(i), msg)
            })?;
        let plugins = build_plugins(config, registry, &paths_policy(&config.server))?;
        let cache = if config.routes.iter().any(|r| r.cache.enabled) {
            let store = CacheStore::build(&config.cache).map_err(|e| {
                ConfigError::at(&KeyPath::root().key("cache"), format!("cache: {e}"))
            })?;
            Some(store)
        } else {
            None
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
        let connections = ConnectionLimit::new(s.max_connections);
        let metrics = Metrics::new(&table, &upstreams, cache.as_ref(), &connections)
            .map_err(|e| ConfigError::at(&KeyPath::root(), format!("metrics: {e}")))?;
        // Parses the section only: nothing connects until the first cluster-limited request.
        let redis = match &config.redis {
            Some(r) => Some(
                crate::redis::RedisBackend::new(r)
                    .map(Arc::new)
                    .map_err(|e| ConfigError::at(&KeyPath::root().key("redis"), e))?,
            ),
            None => None,
        };
        if let Some(r) = &redis {
            metrics
                .register_redis(r)
                .map_err(|e| ConfigError::at(&KeyPath::root(), format!("metrics: {e}")))?;
        }
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
        let access_log = match &config.access_log {
            a if a.enabled => Some(Arc::new(
                AccessLog::open(a, metrics.access_log_dropped().clone()).map_err(|e| {
                    ConfigError::at(
                        &KeyPath::root().key("access_log").key("path"),
                        format!("cannot open {}: {e}", a.path),
                    )
                })?,
            )),
            _ => None,
        };
        Ok((
            Runtime {
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
                redis,
            },
            services,
        ))
    }
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
