//! The policy layer end to end: every built-in plugin's allow and deny paths, the phase order,
//! `rate_limit.key: consumer`, the consumer (key_auth's and a JWT's) in the access log,
//! `$consumer` and the metric labels, each plugin refusal's access log `decision` and metric
//! kind, `mirror`'s `percent` and `max_body_bytes`, a user plugin built through
//! `Gateway::builder().plugin(..)` (examples/custom_plugin.rs), and the config errors.

mod access;
mod auth;
mod basic_auth;
mod consumer;
mod custom;
mod decisions;
mod errors;
mod forward_auth;
mod jwt;
mod mirror;
mod options;
mod secrets;
mod transforms;

use crate::harness::{wait_until, GatewayProcess, RawOrigin};
use std::time::Duration;

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

/// `access_log:` lines for `top`: a file `{dir}/access.log` in `format`.
fn access_log(format: &str) -> String {
    format!("access_log:\n  enabled: true\n  format: {format}\n  path: \"{{dir}}/access.log\"\n")
}

/// The access log's complete lines once it has at least `n` (the writer batches every
/// 100 ms); panics with what it has after a bounded wait.
async fn access_log_lines(gw: &GatewayProcess, n: usize) -> Vec<String> {
    let path = gw.dir().join("access.log");
    let read = || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // A line still being written has no newline yet.
        let end = text.rfind('\n').map_or(0, |i| i + 1);
        text[..end].lines().map(String::from).collect::<Vec<_>>()
    };
    let done = wait_until(Duration::from_secs(5), || async { read().len() >= n }).await;
    let lines = read();
    assert!(done, "expected {n} access log lines:\n{lines:#?}");
    lines
}

/// The `/metrics` text of `gw` (admin listener without a token).
async fn metrics_text(gw: &GatewayProcess) -> String {
    crate::harness::client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}
