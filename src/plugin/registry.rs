//! Builds plugins from their config items: the built-ins, and the types users register
//! through [`GatewayBuilder::plugin`](crate::GatewayBuilder::plugin).

use super::{builtin, Plugin, PluginChain};
use crate::config::{ConfigError, KeyPath, PluginSpec};
use crate::edge::PathPolicy;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

/// Builds a user plugin from its item's YAML config; the error is located by the gateway.
pub type PluginFactory = Arc<
    dyn Fn(&serde_yaml::Value, &PluginContext<'_>) -> Result<Arc<dyn Plugin>, ConfigError>
        + Send
        + Sync,
>;

/// What a factory knows while it builds one plugin item.
pub struct PluginContext<'a> {
    path: &'a KeyPath,
    pub(crate) paths: &'a PathPolicy,
}

impl<'a> PluginContext<'a> {
    pub(crate) fn new(path: &'a KeyPath, paths: &'a PathPolicy) -> Self {
        PluginContext { path, paths }
    }

    /// The item's key path, e.g. `routes[3].plugins[1].tenant`.
    pub fn path(&self) -> &KeyPath {
        self.path
    }

    /// An error at `key` inside the item's config (`""` for the item itself).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let path = if key.is_empty() {
            self.path.clone()
        } else {
            key.split('.').fold(self.path.clone(), |p, k| p.key(k))
        };
        ConfigError::at(&path, message)
    }

    /// Deserializes the item's config into the plugin's own typed struct.
    pub fn parse<T: DeserializeOwned>(&self, value: &serde_yaml::Value) -> Result<T, ConfigError> {
        serde_yaml::from_value(value.clone()).map_err(|e| self.error("", e.to_string()))
    }
}

/// The plugin types a gateway knows: the built-ins and the registered user types.
#[derive(Clone, Default)]
pub struct Registry {
    custom: HashMap<String, PluginFactory>,
}

impl Registry {
    /// Registers a user plugin type; a built-in name is refused.
    pub fn register(&mut self, name: &str, factory: PluginFactory) -> Result<(), ConfigError> {
        if builtin::NAMES.contains(&name) {
            return Err(ConfigError::at(
                &KeyPath::root(),
                format!("plugin type {name:?} is built in and cannot be registered"),
            ));
        }
        self.custom.insert(name.to_string(), factory);
        Ok(())
    }

    /// Builds one plugin item.
    pub fn build(
        &self,
        spec: &PluginSpec,
        path: &KeyPath,
        paths: &PathPolicy,
    ) -> Result<Arc<dyn Plugin>, ConfigError> {
        let item = path.key(spec.kind());
        let cx = PluginContext::new(&item, paths);
        match spec {
            PluginSpec::Custom { kind, config } => match self.custom.get(kind) {
                Some(factory) => factory(config, &cx),
                None => {
                    let mut known: Vec<&str> = builtin::NAMES.to_vec();
                    known.extend(self.custom.keys().map(String::as_str));
                    Err(ConfigError::at(
                        &item,
                        format!("unknown plugin type {kind:?} (known: {})", known.join(", ")),
                    ))
                }
            },
            builtin => builtin::build(builtin, &cx),
        }
    }

    /// Builds every item of a list, under `path` (`plugins` or `routes[i].plugins`).
    pub fn build_list(
        &self,
        specs: &[PluginSpec],
        path: &KeyPath,
        paths: &PathPolicy,
    ) -> Result<Vec<Arc<dyn Plugin>>, ConfigError> {
        specs
            .iter()
            .enumerate()
            .map(|(i, s)| self.build(s, &path.index(i), paths))
            .collect()
    }

    /// A route's chain: the global plugins (built once, shared) and then its own.
    pub fn chain(
        &self,
        global: &[Arc<dyn Plugin>],
        route: &[PluginSpec],
        path: &KeyPath,
        paths: &PathPolicy,
    ) -> Result<PluginChain, ConfigError> {
        let mut all = global.to_vec();
        all.extend(self.build_list(route, path, paths)?);
        Ok(PluginChain::new(all))
    }
}
