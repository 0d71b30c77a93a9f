//! Upstream pools: backends, selection, health checks and the peers handed to Pingora.

mod breaker;
mod dns;
mod health;
mod mirror;
mod pool;
mod selection;
mod supervisor;

pub use breaker::{Admission, BreakerState, CircuitBreaker};
pub use dns::{DnsState, NameState};
pub use mirror::{BodyTap, Mirror, MirrorCounters};
pub use pool::{BackendSlot, InflightGuard, Upstream};
pub use selection::HashKey;
pub use supervisor::{Supervisor, UpstreamSet};

/// An upstream's id: its position in the runtime's upstream list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(u32);

impl UpstreamId {
    /// The id of the upstream at `index`.
    pub fn new(index: usize) -> UpstreamId {
        UpstreamId(index as u32)
    }

    /// The upstream's position in the runtime's list.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}
