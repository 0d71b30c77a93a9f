//! Adversarial regression tests: request smuggling over HTTP/1 and floods over HTTP/2, each
//! asserting both what the attacking client gets and what a [`RawOrigin`] behind the gateway
//! actually received on the wire.
//!
//! [`RawOrigin`]: crate::harness::RawOrigin

mod admin;
mod bombs;
mod cache_poisoning;
mod h2_floods;
mod header_trust;
mod http10;
mod paths;
mod slowloris;
mod smuggling;
mod stalls;
mod targets;

/// The `server:` section every adversarial gateway runs with: the harness's private paths and
/// short grace periods, plus short client timeouts so that a refused or stalled attack ends
/// within a test's time budget.
pub fn server_section() -> &'static str {
    "server:
  workers: 2
  pid_file: {dir}/gw.pid
  upgrade_sock: {dir}/upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  header_read_timeout_ms: 1000
  client_body_timeout_ms: 1000
  keepalive_timeout_seconds: 5
"
}
