//! The built-in plugins. Each implements [`Plugin`](super::Plugin) exactly as a user plugin
//! would, and owns its typed config.

pub mod basic_auth;
pub mod cors;
pub mod digest;
pub mod forward_auth;
pub mod headers;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod redirect;
pub mod rewrite;
pub mod subrequest;

use super::{Plugin, PluginContext};
use crate::config::{ConfigError, PluginSpec};
use std::sync::Arc;

/// The built-in type names (a user type cannot take one).
pub const NAMES: [&str; 10] = [
    "ip_restriction",
    "cors",
    "jwt",
    "basic_auth",
    "forward_auth",
    "key_auth",
    "redirect",
    "rewrite",
    "request_headers",
    "response_headers",
];

/// Builds a built-in plugin from its parsed config.
pub fn build(spec: &PluginSpec, cx: &PluginContext<'_>) -> Result<Arc<dyn Plugin>, ConfigError> {
    Ok(match spec {
        PluginSpec::IpRestriction(c) => Arc::new(ip_restriction::IpRestriction::build(c, cx)?),
        PluginSpec::Cors(c) => Arc::new(cors::Cors::build(c, cx)?),
        PluginSpec::Jwt(c) => Arc::new(jwt::Jwt::build(c, cx)?),
        PluginSpec::BasicAuth(c) => Arc::new(basic_auth::BasicAuth::build(c, cx)?),
        PluginSpec::ForwardAuth(c) => Arc::new(forward_auth::ForwardAuth::build(c, cx)?),
        PluginSpec::KeyAuth(c) => Arc::new(key_auth::KeyAuth::build(c, cx)?),
        PluginSpec::Redirect(c) => Arc::new(redirect::Redirect::build(c, cx)?),
        PluginSpec::Rewrite(c) => Arc::new(rewrite::Rewrite::build(c, cx)?),
        PluginSpec::RequestHeaders(c) => Arc::new(headers::RequestHeaders::build(c)),
        PluginSpec::ResponseHeaders(c) => Arc::new(headers::ResponseHeaders::build(c)),
        PluginSpec::Custom { .. } => {
            return Err(cx.error("", "not a built-in plugin type"));
        }
    })
}
