//! Upstream pools: backends, selection, health checks and the peers handed to Pingora.

mod breaker;
mod health;
mod mirror;
mod pool;
mod selection;

pub use breaker::{Admission, BreakerState, CircuitBreaker};
pub use mirror::{BodyTap, Mirror, MirrorCounters};
pub use pool::{BackendSlot, HealthService, InflightGuard, Upstream};
pub use selection::HashKey;
