//! [`GatewayBuilder`]: the programmatic way to build the same gateway a YAML file describes.

use super::Gateway;
use crate::config::{Config, ConfigError, KeyPath};
use crate::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Gateway`] from a [`Config`], with optional overrides.
#[derive(Default)]
pub struct GatewayBuilder {
    config: Option<Config>,
    pool_size: Option<usize>,
    idle_timeout: Option<Duration>,
}

impl GatewayBuilder {
    /// Uses this configuration (validated again by [`build`](Self::build)).
    pub fn config(mut self, config: Config) -> Self {
        self.config = Some(config);
        self
    }

    /// Sets the upstream keep-alive pool size (idle connections kept per worker).
    pub fn with_connection_pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Sets how long idle upstream connections are kept, for every upstream.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Validates the configuration and compiles the runtime model.
    pub fn build(self) -> Result<Gateway, ConfigError> {
        let config = self
            .config
            .ok_or_else(|| ConfigError::at(&KeyPath::root(), "no configuration given"))?;
        config.validate()?;
        let (runtime, health) = Runtime::build(&config, self.idle_timeout)?;
        // Pingora keeps one LRU pool of idle upstream connections per proxy service, sized
        // `upstream_keepalive_pool_size × workers`; make room for every upstream's max_idle.
        let pool_size = self.pool_size.unwrap_or_else(|| {
            let wanted: usize = config
                .upstreams
                .values()
                .map(|u| u.connection_pool.max_idle)
                .sum();
            wanted.max(config.server.upstream_keepalive_pool_size)
        });
        Ok(Gateway {
            config,
            runtime: Arc::new(runtime),
            health,
            pool_size,
        })
    }
}
