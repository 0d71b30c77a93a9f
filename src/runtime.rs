//! The compiled runtime model: what the hot path reads, built once from a validated [`Config`].

use crate::access_log::AccessLog;
use crate::cache::{CacheStore, RouteCache};
use crate::compression::CompressionPolicy;
use crate::config::{Config, ConfigError, ForwardedFor, KeyPath};
use crate::edge::PathPolicy;
use crate::metrics::Metrics;
use crate::plugin::{PluginChain, Registry};
use crate::policy::{RouteGuards, TrustedProxies};
use crate::routing::RouteTable;
use crate::upstream::{HealthService, Mirror, Upstream};
use pingora_core::services::listening::ConnectionLimit;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Immutable state shared by the proxy and the admin listener.
pub struct Runtime {
    /// The compiled route table.
    pub routes: RouteTable,
    /// Upstream pools, indexed as the route table refers to them.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Rate limits and concurrency caps, indexed like the routes.
    pub guards: Vec<RouteGuards>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// The response cache, when any route caches.
    pub cache: Option<CacheStore>,
    /// Per-route cache settings, indexed like the routes.
    pub route_cache: Vec<Option<RouteCache>>,
    /// Per-route compression, indexed like the routes.
    pub route_compression: Vec<Option<CompressionPolicy>>,
    /// Per-route plugin chains (global plugins first), indexed like the routes.
    pub plugins: Vec<PluginChain>,
    /// Per-route request mirrors, indexed like the routes.
    pub mirrors: Vec<Option<Mirror>>,
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
        let routes = RouteTable::build(&config.routes, |n| index.get(n).copied())?;
        let guards = crate::policy::build_route_guards(config)?;
        let trusted_proxies =
            TrustedProxies::parse(&config.trusted_proxies).map_err(|(i, msg)| {
                ConfigError::at(&KeyPath::root().key("trusted_proxies").index(i), msg)
            })?;
        let routes_path = KeyPath::root().key("routes");
        let mut route_cache = Vec::with_capacity(config.routes.len());
        let mut route_compression = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let p = routes_path.index(i);
            route_cache.push(RouteCache::build(&r.cache, &p.key("cache"))?);
            route_compression.push(CompressionPolicy::build(
                &config.compression,
                &r.compression,
                &p.key("compression"),
            )?);
        }
        let plugins = build_plugins(config, registry, &paths_policy(&config.server))?;
        let cache = if route_cache.iter().any(Option::is_some) {
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
        let metrics = Metrics::new(&routes, &upstreams, cache.as_ref(), &connections)
            .map_err(|e| ConfigError::at(&KeyPath::root(), format!("metrics: {e}")))?;
        let mirrors = config
            .routes
            .iter()
            .map(|r| {
                let m = r.mirror.as_ref()?;
                let up = index.get(m.upstream.as_str())?;
                Some(Mirror::new(
                    upstreams[*up].clone(),
                    m,
                    metrics.mirror_counters(&r.name),
                ))
            })
            .collect();
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
                routes,
                upstreams,
                guards,
                trusted_proxies,
                cache,
                route_cache,
                route_compression,
                plugins,
                mirrors,
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
