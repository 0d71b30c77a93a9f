//! The policy layer: the [`Plugin`] trait that every built-in plugin (access control, CORS,
//! authentication, redirects, rewrites, header transforms) and every user plugin implements.
//!
//! A plugin never sees Pingora's `Session`: each hook gets a small view of the request
//! ([`RequestView`], [`UpstreamView`], [`ResponseView`], [`LogView`]), so a Pingora upgrade
//! does not break user code. Plugins are built once when the config loads ([`Registry`]) and
//! run in a fixed order of [`Phase`]s whatever their order in the file ([`PluginChain`]).

pub mod builtin;
mod chain;
mod consumer;
mod registry;
mod reply;
pub mod template;
mod view;

pub use chain::PluginChain;
pub use consumer::Consumer;
pub use registry::{PluginContext, PluginFactory, Registry};
pub use reply::{Flow, Reply, ReplyBody, ReplyKind};
pub use view::{
    cookie, query_param, LogView, RequestInfo, RequestView, ResponseView, UpstreamView,
};

use async_trait::async_trait;

/// When a plugin's `request` hook runs, relative to the others and to the gateway's own
/// rate limit and circuit breaker. Plugins run phase by phase; within a phase, global plugins
/// first, then in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// IP allow and deny lists (`ip_restriction`).
    Access,
    /// CORS preflights are answered here, before authentication (browsers send no credentials).
    Cors,
    /// Authentication: sets the request's [`Consumer`].
    Authenticate,
    /// After the rate limit and circuit breaker: redirects.
    Redirect,
    /// Path rewrites.
    Rewrite,
    /// Everything else that inspects or changes the request (the default for user plugins).
    Request,
}

impl Phase {
    /// Whether this phase runs before the route's rate limit and circuit breaker.
    pub fn before_rate_limit(self) -> bool {
        self <= Phase::Authenticate
    }
}

/// A per-route policy. Every hook defaults to doing nothing, so a plugin implements only the
/// phases it needs.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// When the `request` hook runs (see [`Phase`]).
    fn phase(&self) -> Phase {
        Phase::Request
    }

    /// Inspects or changes the client's request; may answer it instead of proxying.
    async fn request(&self, _req: &mut RequestView<'_>) -> Flow {
        Flow::Continue
    }

    /// Changes the request about to be sent to the chosen backend.
    async fn upstream_request(&self, _req: &mut UpstreamView<'_>) {}

    /// Changes the response header about to be sent to the client (proxied or from cache).
    async fn response(&self, _resp: &mut ResponseView<'_>) {}

    /// Sees the finished request.
    async fn logging(&self, _log: &LogView<'_>) {}
}
