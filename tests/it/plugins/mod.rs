//! The policy layer end to end: every built-in plugin's allow and deny paths, the phase order,
//! `rate_limit.key: consumer`, the consumer in the access log, a user plugin built through
//! `Gateway::builder().plugin(..)` (examples/custom_plugin.rs), and the config errors.

mod access;
mod auth;
mod basic_auth;
mod custom;
mod errors;
mod forward_auth;
mod jwt;
mod transforms;

use crate::harness::{GatewayProcess, RawOrigin};

/// A gateway over `origin` as upstream `backend`; `routes` is the YAML under `routes:` and
/// `top` extra top-level keys (global `plugins:`, `trusted_proxies:`).
fn gateway(origin: &RawOrigin, routes: &str, top: &str) -> GatewayProcess {
    GatewayProcess::start(&yaml(origin, routes, top))
}

fn yaml(origin: &RawOrigin, routes: &str, top: &str) -> String {
    format!(
        "listeners:\n  - address: \"{{listen}}\"\nupstreams:\n  backend:\n    servers: [{{ address: \"{}\" }}]\n{top}\nroutes:\n{routes}\n",
        origin.addr
    )
}

/// SHA-256 of `key` in hex, as `key_sha256` expects (`printf %s KEY | sha256sum`).
fn sha256_hex(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
