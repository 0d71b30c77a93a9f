//! Integration tests: the real gateway binary against real loopback upstreams.

mod harness;

mod bad_requests;
mod balancing;
mod config_errors;
mod health;
mod proxying;
mod routing;
mod smoke;
