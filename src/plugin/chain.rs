//! A route's plugins, in the order they run.

use super::{Phase, Plugin};
use std::sync::Arc;

/// The plugins of one route (global ones first), ordered by [`Phase`](super::Phase) at load.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Box<[Arc<dyn Plugin>]>,
    split: usize,
    authenticates: bool,
    preflights: bool,
}

impl PluginChain {
    /// Orders plugins by phase, keeping file order (global first) within a phase.
    pub fn new(mut plugins: Vec<Arc<dyn Plugin>>) -> Self {
        plugins.sort_by_key(|p| p.phase());
        let split = plugins
            .iter()
            .position(|p| !p.phase().before_rate_limit())
            .unwrap_or(plugins.len());
        let authenticates = plugins.iter().any(|p| p.phase() == Phase::Authenticate);
        let preflights = plugins.iter().any(|p| p.phase() == Phase::Cors);
        PluginChain {
            plugins: plugins.into(),
            split,
            authenticates,
            preflights,
        }
    }

    /// Whether the chain authenticates (has an [`Phase::Authenticate`] plugin).
    pub fn authenticates(&self) -> bool {
        self.authenticates
    }

    /// Whether the chain answers CORS preflights (has a [`Phase::Cors`] plugin).
    pub fn answers_preflights(&self) -> bool {
        self.preflights
    }

    /// Whether the route has no plugins (then no hook costs anything).
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The plugins whose `request` hook runs before the rate limit and circuit breaker.
    pub fn before_limit(&self) -> &[Arc<dyn Plugin>] {
        self.plugins.get(..self.split).unwrap_or(&[])
    }

    /// The plugins whose `request` hook runs after the rate limit.
    pub fn after_limit(&self) -> &[Arc<dyn Plugin>] {
        self.plugins.get(self.split..).unwrap_or(&[])
    }

    /// Every plugin, in order.
    pub fn all(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }
}

impl std::fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PluginChain({} plugins)", self.plugins.len())
    }
}
