//! Integration tests: the real gateway binary against real loopback upstreams.

mod harness;

mod access_log;
mod adversarial;
mod bad_requests;
mod balancing;
mod cache;
mod circuit_breaker;
mod compression;
mod config_errors;
mod dashboards;
mod dns;
mod header_case;
mod health;
mod keepalive;
mod metrics;
mod passive_health;
mod plugins;
mod proxying;
mod rate_limit;
mod rate_limit_cluster;
mod reload;
mod routing;
mod smoke;
mod startup_log;
mod tracing;
mod traffic;
mod upgrade;
mod upstream_faults;
mod upstream_tls;
