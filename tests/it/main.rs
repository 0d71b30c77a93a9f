//! Integration tests: the real gateway binary against real loopback upstreams.

mod harness;

mod bad_requests;
mod balancing;
mod circuit_breaker;
mod config_errors;
mod health;
mod passive_health;
mod proxying;
mod rate_limit;
mod routing;
mod smoke;
mod upstream_faults;
mod upstream_tls;
