//! The compiled runtime model: what the hot path reads, built once from a validated [`Config`].

use crate::config::{Config, ConfigError, KeyPath};
use crate::policy::{RouteGuards, TrustedProxies};
use crate::routing::RouteTable;
use crate::upstream::{HealthService, Upstream};
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
    /// Downstream timeouts and limits applied to every request.
    pub downstream: DownstreamSettings,
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
}

impl Runtime {
    /// Compiles the config; returns the runtime and the health-check services to run.
    pub fn build(
        config: &Config,
        idle_timeout_override: Option<Duration>,
    ) -> Result<(Runtime, Vec<HealthService>), ConfigError> {
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        let mut index = HashMap::with_capacity(config.upstreams.len());
        let mut services = Vec::new();
        for (name, cfg) in &config.upstreams {
            let (up, svc) = Upstream::build(name, cfg, idle_timeout_override)?;
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
        let s = &config.server;
        let downstream = DownstreamSettings {
            keepalive_timeout_secs: s.keepalive_timeout_seconds,
            keepalive_requests: (s.keepalive_requests > 0).then_some(s.keepalive_requests),
            body_read_timeout: Duration::from_millis(s.client_body_timeout_ms),
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            max_header_bytes: s.max_header_bytes,
        };
        Ok((
            Runtime {
                routes,
                upstreams,
                guards,
                trusted_proxies,
                downstream,
            },
            services,
        ))
    }
}
