//! `max_in_flight`: a per-route cap on concurrent requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts a route's in-flight requests against its cap.
#[derive(Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    current: Arc<AtomicUsize>,
}

/// Releases one in-flight slot when dropped.
#[derive(Debug)]
pub struct ConcurrencyGuard(Arc<AtomicUsize>);

impl Drop for ConcurrencyGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    /// A cap of `max` concurrent requests.
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes a slot, or `None` when the route is at its cap.
    pub fn try_acquire(&self) -> Option<ConcurrencyGuard> {
        let prev = self.current.fetch_add(1, Ordering::AcqRel);
        let guard = ConcurrencyGuard(self.current.clone());
        (prev < self.max).then_some(guard)
    }

    /// Requests currently in flight.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}
