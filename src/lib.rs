//! AVX Gateway: a programmable HTTP reverse proxy and API gateway built on Pingora.
//!
//! The binary `avx-gateway` is a thin wrapper over this library: [`cli`] parses the command
//! line, [`config::Config::load`] reads and validates the YAML file, [`Gateway::builder`]
//! compiles the runtime model, and [`Gateway::run`] hands it to Pingora.

pub mod access_log;
pub mod admin;
pub mod cache;
pub mod cli;
pub mod compression;
pub mod config;
pub mod edge;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod policy;
pub mod proxy;
pub mod redis;
pub mod reload;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod tracing;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use server::{Gateway, GatewayBuilder};
