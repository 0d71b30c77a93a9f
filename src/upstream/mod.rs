//! Upstream pools: backends, selection, health checks and the peers handed to Pingora.

mod health;
mod pool;
mod selection;

pub use pool::{BackendSlot, HealthService, InflightGuard, Upstream};
pub use selection::HashKey;
