//! [`GatewayBuilder`]: the programmatic way to build the same gateway a YAML file describes.

use super::{ConfigSource, Gateway};
use crate::config::{Config, ConfigError, KeyPath};
use crate::plugin::{Plugin, PluginContext, Registry};
use crate::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Gateway`] from a [`Config`], with optional overrides.
#[derive(Default)]
pub struct GatewayBuilder {
    config: Option<Config>,
    pool_size: Option<usize>,
    idle_timeout: Option<Duration>,
    registry: Registry,
    registry_error: Option<ConfigError>,
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

    /// Registers a plugin type: YAML items `- NAME: { ... }` are built by `factory` from their
    /// config. A built-in name is refused when the gateway is built.
    pub fn plugin<F>(mut self, name: &str, factory: F) -> Self
    where
        F: Fn(&serde_yaml::Value, &PluginContext<'_>) -> Result<Arc<dyn Plugin>, ConfigError>
            + Send
            + Sync
            + 'static,
    {
        if let Err(e) = self.registry.register(name, Arc::new(factory)) {
            self.registry_error.get_or_insert(e);
        }
        self
    }

    /// Loads the YAML file and builds; every error names the file, line and key. The file
    /// is what a reload (SIGHUP, `POST /reload`, `watch_config`) reads again.
    pub fn build_from_file(self, path: &str) -> Result<Gateway, ConfigError> {
        let source = Config::read_source(path)?;
        let located = |e: ConfigError| e.in_file(path, &source);
        let config = Config::from_yaml_str(&source).map_err(located)?;
        let mut gateway = self.config(config).build().map_err(located)?;
        // Absolute, because a daemon's working directory is `/` by the time it reloads.
        let absolute = std::path::absolute(path)
            .map_or_else(|_| path.to_string(), |p| p.display().to_string());
        gateway.source = Some(ConfigSource {
            path: absolute,
            sha256: crate::reload::sha256_hex(source.as_bytes()),
        });
        Ok(gateway)
    }

    /// Validates the configuration and compiles the runtime model.
    pub fn build(self) -> Result<Gateway, ConfigError> {
        if let Some(e) = self.registry_error {
            return Err(e);
        }
        let config = self
            .config
            .ok_or_else(|| ConfigError::at(&KeyPath::root(), "no configuration given"))?;
        config.validate()?;
        let runtime = Runtime::build(&config, &self.registry, self.idle_timeout)?;
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
            pool_size,
            source: None,
            registry: self.registry,
            idle_timeout: self.idle_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "listeners: [{ address: 127.0.0.1:18999 }]\n\
        upstreams: { b: { servers: [{ address: 127.0.0.1:3000 }], connection_pool: { max_idle: 300 } } }\n\
        routes: [{ name: r, match: { path_prefix: / }, upstream: b }]\n";

    #[test]
    fn builds_the_gateway_the_yaml_describes_with_overrides() {
        let config = Config::from_yaml_str(YAML).expect("valid yaml");
        let from_yaml = Gateway::builder()
            .config(config.clone())
            .build()
            .expect("builds");
        // The pool makes room for every upstream's max_idle by default.
        assert_eq!(from_yaml.server_conf().upstream_keepalive_pool_size, 300);
        assert_eq!(from_yaml.runtime().routes.len(), 1);

        let tuned = Gateway::builder()
            .config(config)
            .with_connection_pool_size(100)
            .with_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("builds");
        assert_eq!(tuned.server_conf().upstream_keepalive_pool_size, 100);
        assert_eq!(tuned.server_conf().threads, 2);
        assert!(Gateway::builder().build().is_err(), "a config is required");
    }
}
