//! The YAML model: exactly what users write in `gateway.yaml`.
//!
//! Every struct denies unknown fields so that a typo is an error, not a silently ignored key.
//! Defaults live next to the field they belong to; `docs/configuration.md` mirrors them.

use super::PluginSpec;
use crate::edge::{EscapedSlashes, PathSemicolons};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-level settings (workers, pid file, upgrade socket, timeouts).
    #[serde(default)]
    pub server: ServerSection,
    /// Public listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (health, status, metrics).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Named upstream pools.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, in file order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Plugins run on every route, before the route's own.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
    /// Default rate limit for routes that have none of their own.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed when finding the client IP.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// What an untrusted peer's `X-Forwarded-For` becomes upstream.
    #[serde(default)]
    pub forwarded_for: ForwardedFor,
    /// The shared response cache (storage limits); routes opt in with `cache.enabled`.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Response compression defaults; routes opt in with `compression.enabled`.
    #[serde(default)]
    pub compression: CompressionConfig,
    /// One line per request, written off the hot path.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The Redis behind `rate_limit.scope: cluster`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// OpenTelemetry tracing: W3C Trace Context in and out, spans exported over OTLP/HTTP.
    #[serde(default)]
    pub tracing: TracingConfig,
}

/// `tracing:`: one server span per request and one client span per upstream attempt,
/// exported in batches over OTLP/HTTP (protobuf) from a background task.
///
/// Compared whole (`PartialEq`) so a reload can keep the running exporter when it is unchanged.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Trace requests; off, the request path only checks an `Option`.
    pub enabled: bool,
    /// The collector's OTLP/HTTP traces URL (`http://` or `https://`).
    pub otlp_endpoint: super::OtlpEndpoint,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of new traces sampled; a sampled incoming `traceparent` is always kept.
    pub sample_ratio: super::SampleRatio,
    /// Finished spans that may wait for export; beyond it spans are dropped and counted.
    pub max_queue_size: std::num::NonZeroUsize,
    /// Most spans sent in one export request.
    pub max_export_batch_size: std::num::NonZeroUsize,
    /// Longest a finished span waits before its batch is sent, in ms.
    pub scheduled_delay_ms: u64,
    /// Deadline of one export request (retries included), in ms.
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: false,
            otlp_endpoint: super::OtlpEndpoint::default(),
            service_name: "avx-gateway".into(),
            sample_ratio: super::SampleRatio(1.0),
            max_queue_size: std::num::NonZeroUsize::new(2048)
                .unwrap_or(std::num::NonZeroUsize::MIN),
            max_export_batch_size: std::num::NonZeroUsize::new(512)
                .unwrap_or(std::num::NonZeroUsize::MIN),
            scheduled_delay_ms: 5_000,
            export_timeout_ms: 10_000,
        }
    }
}

/// `redis:`: the store that rate limits with `scope: cluster` share across gateways.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// One server: `redis://` or `rediss://` (TLS), with an optional `/DB`.
    #[serde(default)]
    pub url: Option<super::RedisUrl>,
    /// Seed nodes of a Redis Cluster (instead of `url`).
    #[serde(default)]
    pub urls: Vec<super::RedisUrl>,
    /// Multiplexed connections, used round-robin.
    #[serde(default = "default_redis_pool_size")]
    pub pool_size: usize,
    /// Deadline of each command, connection wait included, in ms.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_redis_pool_size() -> usize {
    8
}
fn default_redis_timeout_ms() -> u64 {
    20
}

/// `rate_limit.scope`: where a rate limit's buckets live.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// In this process's fixed-size table.
    #[default]
    Local,
    /// In Redis, shared by every gateway on the same `redis:`.
    Cluster,
}

/// `rate_limit.failure_mode`: what a `scope: cluster` limit does when Redis cannot answer.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Admit the request (availability first).
    #[default]
    Open,
    /// Refuse it with 503.
    Closed,
}

/// `access_log:`: one line per request, rendered on the worker and written by its own thread.
///
/// Off by default: the default destination is stdout, which under systemd is the journal, and
/// silently sending every request there costs CPU and floods (and rate-limits) the journal.
/// Turning it on is one line, with a file path for real traffic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Write the access log.
    pub enabled: bool,
    /// `stdout`, or a file appended to (and reopened on SIGUSR1, for logrotate).
    pub path: String,
    /// `combined` (NGINX's, plus request id and duration) or `json`.
    pub format: AccessLogFormat,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: false,
            path: "stdout".into(),
            format: AccessLogFormat::Combined,
        }
    }
}

/// `forwarded_for`: the `X-Forwarded-For` sent upstream for a peer outside `trusted_proxies`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedFor {
    /// The peer address alone, as Traefik does for untrusted sources: nothing the client
    /// wrote reaches the origin.
    #[default]
    Replace,
    /// The client's own lines, then the peer (NGINX's `$proxy_add_x_forwarded_for`).
    Append,
}

/// `access_log.format`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// NGINX `combined`, followed by `"request_id" duration_seconds`.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// `cache:`: the in-memory store shared by every caching route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most entries kept; the least recently used are evicted beyond it.
    pub max_size: usize,
    /// Memory budget for bodies and headers, in bytes.
    pub max_bytes: usize,
    /// Upper bound on any entry's freshness, in seconds.
    pub ttl_seconds: u64,
    /// Larger responses pass through uncached, streamed.
    pub max_object_bytes: usize,
    /// How long concurrent misses on one key wait for the first to fill it, in ms.
    pub lock_timeout_ms: u64,
    /// The RFC 9213 targeted field aimed at this gateway; it takes precedence over
    /// `CDN-Cache-Control`, which takes precedence over `Cache-Control`.
    pub targeted_cache_control: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_size: 10_000,
            max_bytes: 268_435_456,
            ttl_seconds: 300,
            max_object_bytes: 8_388_608,
            lock_timeout_ms: 5_000,
            targeted_cache_control: "AVX-Cache-Control".into(),
        }
    }
}

/// `routes[].cache`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteCacheConfig {
    /// Cache this route's GET and HEAD responses.
    pub enabled: bool,
    /// Freshness for 200s that carry a validator but no explicit lifetime (0 = none).
    pub default_ttl_seconds: u64,
    /// Serve stale while refreshing in the background, when the origin says nothing.
    pub stale_while_revalidate_seconds: u32,
    /// Serve stale when the origin fails, when the origin says nothing.
    pub stale_if_error_seconds: u32,
    /// Extra parts of the cache key.
    pub key: CacheKeyConfig,
    /// Requests that carry `Cookie`: `bypass` the cache unless the response is explicitly
    /// shared (`public`, `s-maxage`), or `ignore` the cookie (dangerous: see docs/security.md).
    pub cookies: CacheCookies,
    /// A successful unsafe request (POST, PUT, DELETE, any unknown method) evicts its URL.
    pub invalidate_on_unsafe: bool,
}

impl Default for RouteCacheConfig {
    fn default() -> Self {
        RouteCacheConfig {
            enabled: false,
            default_ttl_seconds: 0,
            stale_while_revalidate_seconds: 0,
            stale_if_error_seconds: 0,
            key: CacheKeyConfig::default(),
            cookies: CacheCookies::Bypass,
            invalidate_on_unsafe: true,
        }
    }
}

/// `routes[].cache.cookies`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CacheCookies {
    /// Not served from the cache nor stored, unless the response says `public`/`s-maxage`.
    #[default]
    Bypass,
    /// Cached as if the cookie were absent.
    Ignore,
}

/// `routes[].cache.key`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CacheKeyConfig {
    /// Request headers whose values are part of the key.
    pub include_headers: Vec<String>,
    /// Leave the query string out of the key.
    pub ignore_query: bool,
}

/// `compression:` (global) and `routes[].compression` (overrides).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Compress responses: globally for every route, or per route (a route's value wins).
    pub enabled: Option<bool>,
    /// Bodies known to be smaller than this are sent as they are (default 1024).
    pub min_size: Option<usize>,
    /// Compression level, 1-9 (default 6), handed as is to every algorithm.
    pub level: Option<u32>,
    /// Algorithms in server preference order (default zstd, br, gzip).
    pub algorithms: Option<Vec<String>>,
    /// Content types to compress; `text/*` style prefixes allowed.
    pub content_types: Option<Vec<String>>,
    /// Decompress gzip from the upstream for clients that do not accept it (default true).
    pub decompress: Option<bool>,
    /// Most bytes one decompressed response may inflate to; beyond it the response is cut
    /// off (default 64 MiB).
    pub max_decompressed_bytes: Option<u64>,
}

/// `server:`: process-wide settings handed to Pingora.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads for the proxy service.
    pub workers: usize,
    /// PID file, written when daemonized.
    pub pid_file: String,
    /// Unix socket used to hand listening sockets to a new process on upgrade.
    pub upgrade_sock: String,
    /// Seconds to keep serving after SIGTERM/SIGQUIT before shutting runtimes down.
    pub grace_period_seconds: u64,
    /// Seconds to wait for runtimes to finish during shutdown.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Daemonize (same as `-d`).
    pub daemon: bool,
    /// Error log file when daemonized.
    pub error_log: Option<String>,
    /// User to drop to after daemonizing.
    pub user: Option<String>,
    /// Group to drop to after daemonizing.
    pub group: Option<String>,
    /// Deadline for a whole request header, and for the TLS, h2c and h2 handshakes before it.
    pub header_read_timeout_ms: u64,
    /// Largest request header block (request line and headers) accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Idle timeout of a downstream keep-alive connection between requests (0 = no keep-alive).
    pub keepalive_timeout_seconds: u64,
    /// Maximum requests served on one downstream keep-alive connection (0 = unlimited).
    pub keepalive_requests: u32,
    /// Timeout for each read of a request body from the client.
    pub client_body_timeout_ms: u64,
    /// Upstream keep-alive pool size (connections kept idle across all upstreams, per worker).
    pub upstream_keepalive_pool_size: usize,
    /// Use a work-stealing runtime across workers.
    pub work_stealing: bool,
    /// Accept tasks per listening socket.
    pub listener_tasks_per_fd: usize,
    /// Normalize paths (RFC 3986 §6.2.2): decode unreserved escapes, uppercase the others,
    /// remove dot-segments.
    pub normalize_path: bool,
    /// Collapse runs of `/` in paths.
    pub merge_slashes: bool,
    /// `%2F` and `%5C` in a path: `reject` (400), `keep` (never a separator) or `unescape`.
    pub escaped_slashes: EscapedSlashes,
    /// `;` in a path: `reject` (400) or `keep`.
    pub path_semicolons: PathSemicolons,
    /// Connections held open at once; more are closed at accept.
    pub max_connections: usize,
    /// Reload in-process when the config file changes (inotify on its directory).
    pub watch_config: bool,
    /// Quiet time after the last change before `watch_config` reloads.
    pub watch_debounce_ms: u64,
    /// Forward HTTP/1 header names in the case they arrived in (NGINX does); `false` drops
    /// Pingora's per-message case map and sends Pingora's canonical names instead.
    pub preserve_header_case: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            workers: 2,
            pid_file: "/tmp/avx-gateway.pid".into(),
            upgrade_sock: "/tmp/avx-gateway-upgrade.sock".into(),
            grace_period_seconds: 5,
            graceful_shutdown_timeout_seconds: 5,
            daemon: false,
            error_log: None,
            user: None,
            group: None,
            header_read_timeout_ms: 10_000,
            max_header_bytes: 64 * 1024,
            keepalive_timeout_seconds: 60,
            keepalive_requests: 0,
            client_body_timeout_ms: 60_000,
            upstream_keepalive_pool_size: 128,
            work_stealing: false,
            listener_tasks_per_fd: 1,
            normalize_path: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            path_semicolons: PathSemicolons::Reject,
            max_connections: 10_000,
            watch_config: false,
            watch_debounce_ms: 500,
            preserve_header_case: true,
        }
    }
}

/// `listeners[]`: one public listening socket.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind.
    pub address: String,
    /// Serve TLS with this certificate; h2 is offered through ALPN.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Accept cleartext HTTP/2 with prior knowledge (HTTP/1.1 keeps working on the same port).
    #[serde(default)]
    pub h2c: bool,
}

/// `listeners[].tls`: certificate and key files (PEM).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chain, PEM.
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
    /// Offer h2 through ALPN.
    #[serde(default = "yes")]
    pub h2: bool,
}

/// `admin:`: the admin listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind; loopback by default.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Bearer token required on every admin endpoint except `/health`; required when
    /// `address` is not loopback.
    #[serde(default)]
    pub token: Option<String>,
    /// Host names accepted in `Host` besides IP literals and `localhost` (DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_admin_address() -> String {
    "127.0.0.1:9090".into()
}

fn yes() -> bool {
    true
}

/// `upstreams.NAME`: a pool of backends.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The backends.
    #[serde(default)]
    pub servers: Vec<ServerConfig>,
    /// Backend selection algorithm.
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    /// Key for `consistent_hash`: `client_ip`, `path` or `header:NAME`.
    #[serde(default)]
    pub hash_key: Option<String>,
    /// Active health check; none means every backend is assumed healthy.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Upstream keep-alive pool settings.
    #[serde(default)]
    pub connection_pool: ConnectionPoolConfig,
    /// Upstream timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Extra attempts on another backend when connecting fails.
    #[serde(default = "default_retries")]
    pub retries: usize,
    /// Talk TLS to the backends.
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
    /// Fail fast while the upstream is failing.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Eject a backend that keeps failing in live traffic.
    #[serde(default)]
    pub passive_health: PassiveHealthConfig,
    /// Seconds between lookups of the servers' DNS names (default 30); a shorter record TTL
    /// wins.
    #[serde(default)]
    pub dns_refresh_seconds: Option<u64>,
    /// DNS servers (`ip:port`) asked instead of those in `/etc/resolv.conf`.
    #[serde(default)]
    pub dns_servers: Vec<std::net::SocketAddr>,
}

impl UpstreamConfig {
    /// Whether any server is a DNS name (the upstream's backend set is then dynamic).
    pub fn has_dns_names(&self) -> bool {
        self.servers
            .iter()
            .any(|s| matches!(s.address, crate::config::ServerAddress::Name { .. }))
    }
}

/// `upstreams.NAME.circuit_breaker`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit (0 disables this trigger).
    pub failure_threshold: u32,
    /// Failure ratio over the window that opens the circuit (0 disables this trigger).
    pub failure_rate: f64,
    /// Requests the window must hold before `failure_rate` applies.
    pub minimum_requests: u32,
    /// Length of the sliding window, in seconds.
    pub window_seconds: u64,
    /// Time the circuit stays open before probing, in seconds (fractions allowed).
    pub open_seconds: f64,
    /// Probes allowed while half-open.
    pub half_open_requests: u32,
    /// Upstream statuses that count as failures.
    pub failure_statuses: Vec<u16>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_rate: 0.5,
            minimum_requests: 20,
            window_seconds: 10,
            open_seconds: 60.0,
            half_open_requests: 1,
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// `upstreams.NAME.passive_health`: outlier ejection from live traffic.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthConfig {
    /// Turn passive ejection on or off.
    pub enabled: bool,
    /// Consecutive live failures that eject a backend (default: the health check's
    /// `unhealthy_threshold`, else 3).
    pub consecutive_failures: Option<u32>,
    /// How long an ejected backend stays out of selection, in milliseconds.
    pub cooldown_ms: u64,
    /// Upstream statuses that count as failures (connect errors, timeouts and resets always do).
    pub failure_statuses: Vec<u16>,
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            enabled: true,
            consecutive_failures: None,
            cooldown_ms: 10_000,
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// `rate_limit:` (global default) and `routes[].rate_limit`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate per key.
    pub requests_per_second: f64,
    /// Extra requests allowed at once above the rate.
    #[serde(default)]
    pub burst: u64,
    /// `client_ip`, `consumer`, `header:NAME` or `route`.
    #[serde(default = "default_limit_key")]
    pub key: crate::policy::LimitKey,
    /// Status of a rejected request.
    #[serde(default = "default_limit_status")]
    pub status: u16,
    /// Send `RateLimit-*` headers on admitted responses too.
    #[serde(default = "yes")]
    pub headers: bool,
    /// Buckets kept (memory is fixed: 8 bytes each); more keys share buckets.
    #[serde(default = "default_limit_slots")]
    pub slots: usize,
    /// `client_ip` keys of IPv6 clients aggregate by this prefix length.
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// `local` (this process) or `cluster` (shared through `redis:`).
    #[serde(default)]
    pub scope: LimitScope,
    /// With `scope: cluster`: admit (`open`) or refuse (`closed`) when Redis cannot answer.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_ipv6_prefix() -> u8 {
    64
}

fn default_limit_key() -> crate::policy::LimitKey {
    crate::policy::LimitKey::ClientIp
}
fn default_limit_status() -> u16 {
    429
}
fn default_limit_slots() -> usize {
    65_536
}

fn default_retries() -> usize {
    1
}

/// `upstreams.NAME.servers[]`: one backend.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ip:port` of the backend, or a DNS `name:port` whose addresses are the backends.
    pub address: crate::config::ServerAddress,
    /// Relative weight for weighted algorithms (1 to 10000).
    #[serde(default = "default_weight")]
    pub weight: usize,
}

fn default_weight() -> usize {
    1
}

/// `upstreams.NAME.load_balancing`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Ketama consistent hashing on `hash_key`.
    ConsistentHash,
    /// The backend with the fewest in-flight requests (weighted).
    LeastConnections,
}

/// `upstreams.NAME.health_check`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` or `tcp`.
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// Path requested by an HTTP check.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Status an HTTP check expects.
    #[serde(default = "default_expected_status")]
    pub expected_status: u16,
    /// Host header (and, over TLS, SNI) of an HTTP check; defaults to `tls.sni`, else `localhost`.
    #[serde(default)]
    pub host: Option<String>,
    /// Time between checks.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Connect and read timeout of one check.
    #[serde(default = "default_hc_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes that mark a backend healthy again.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: usize,
    /// Consecutive failures that mark a backend unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: usize,
}

fn default_health_path() -> String {
    "/health".into()
}
fn default_expected_status() -> u16 {
    200
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_hc_timeout_ms() -> u64 {
    500
}
fn default_healthy_threshold() -> usize {
    2
}
fn default_unhealthy_threshold() -> usize {
    3
}

/// `health_check.type`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// `GET path`, expecting `expected_status`.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
}

/// `upstreams.NAME.connection_pool`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionPoolConfig {
    /// Idle connections kept for reuse (added to the process-wide pool size).
    pub max_idle: usize,
    /// Seconds an idle upstream connection is kept.
    pub idle_timeout_seconds: u64,
}

impl Default for ConnectionPoolConfig {
    fn default() -> Self {
        ConnectionPoolConfig {
            max_idle: 100,
            idle_timeout_seconds: 90,
        }
    }
}

/// `upstreams.NAME.timeouts`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// TCP (and TLS) connect timeout.
    pub connect_ms: u64,
    /// Timeout of each read from the backend.
    pub read_ms: u64,
    /// Timeout of each write to the backend.
    pub write_ms: u64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect_ms: 1000,
            read_ms: 30_000,
            write_ms: 30_000,
        }
    }
}

/// `upstreams.NAME.tls`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// SNI and the name the certificate is verified against.
    pub sni: String,
    /// Verify the backend's certificate.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Offer h2 through ALPN (falls back to HTTP/1.1).
    #[serde(default)]
    pub h2: bool,
}

/// `routes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique route name; used in logs and metrics.
    pub name: String,
    /// What the request must look like.
    #[serde(rename = "match", default)]
    pub matcher: MatchConfig,
    /// Upstream pool to proxy to.
    #[serde(default)]
    pub upstream: Option<String>,
    /// Instead of `upstream`: a weighted split of traffic between upstreams.
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    /// With `split`: keep each client on one side.
    #[serde(default)]
    pub sticky: Option<StickyConfig>,
    /// A copy of each request (or a share of them) to another upstream; its answer is dropped.
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
    /// Answer directly, without an upstream.
    #[serde(default)]
    pub respond: Option<RespondConfig>,
    /// Remove the matched `path_prefix` before proxying.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Send the client's Host header upstream (otherwise the backend address).
    #[serde(default = "yes")]
    pub preserve_host: bool,
    /// Rate limit for this route (overrides the global `rate_limit`).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Concurrency cap for this route; above it requests get 503.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Response caching for this route.
    #[serde(default)]
    pub cache: RouteCacheConfig,
    /// Response compression for this route (overrides the global section).
    #[serde(default)]
    pub compression: CompressionConfig,
    /// The route's plugins, after the global ones.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
}

/// One side of `routes[].split`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The upstream this side proxies to.
    pub upstream: String,
    /// Its share: `weight` / the sum of the weights.
    pub weight: usize,
}

/// `routes[].sticky`: what keeps a client on one side of a split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// A cookie naming the side, set by the gateway when the client has none.
    #[serde(default)]
    pub cookie: Option<String>,
    /// A request header whose value is hashed to a side (e.g. a user id).
    #[serde(default)]
    pub header: Option<String>,
}

/// `routes[].mirror`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream that gets the copies.
    pub upstream: String,
    /// Share of requests copied, 0-100.
    #[serde(default = "default_mirror_percent")]
    pub percent: u8,
    /// Copies in flight at once; beyond it copies are dropped (and counted).
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: usize,
    /// Largest request body copied; a larger body ends the copy (never the request).
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: usize,
}

fn default_mirror_percent() -> u8 {
    100
}

fn default_mirror_in_flight() -> usize {
    100
}

fn default_mirror_body() -> usize {
    1024 * 1024
}

/// `routes[].match`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host, or `*.example.com`.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Segment-aware path prefix.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Regular expression on the path.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Allowed methods; empty means any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Required headers: a value must match exactly; `"*"` only requires presence.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// `routes[].respond`: a fixed response.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code.
    #[serde(default = "default_respond_status")]
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Response body.
    #[serde(default)]
    pub body: String,
}

fn default_respond_status() -> u16 {
    200
}
