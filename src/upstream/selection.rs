//! Backend selection: Pingora's weighted round robin, random and ketama, plus least-connections.

use pingora_load_balancing::selection::{Consistent, Random, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The key a consistent-hash upstream hashes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The request path.
    Path,
    /// The value of a request header.
    Header(http::HeaderName),
}

impl HashKey {
    /// Parses a validated `hash_key` value.
    pub fn parse(s: &str) -> Option<HashKey> {
        match s {
            "client_ip" => Some(HashKey::ClientIp),
            "path" => Some(HashKey::Path),
            other => other
                .strip_prefix("header:")
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                .map(HashKey::Header),
        }
    }
}

/// A load balancer of one of the supported algorithms.
pub(crate) enum Selector {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    Random(Arc<LoadBalancer<Random>>),
    Consistent(Arc<LoadBalancer<Consistent>>),
    /// Health comes from the inner balancer; the choice is ours.
    LeastConnections(Arc<LoadBalancer<RoundRobin>>, AtomicUsize, Vec<Backend>),
}

/// How many candidates the hash-ring and weighted iterators may visit before giving up.
const MAX_ITERATIONS: usize = 256;

impl Selector {
    /// Picks a ready backend whose slot index passes `accept`; `load(i)` is the in-flight
    /// count of slot `i`, used by least-connections.
    pub(crate) fn select(
        &self,
        key: &[u8],
        accept: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let ok = |b: &Backend, healthy: bool| healthy && slot(b).is_some_and(&accept);
        let picked = match self {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::Random(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::Consistent(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::LeastConnections(lb, rotor, backends) => {
                return least_loaded(lb, rotor, backends, &accept, &load);
            }
        };
        picked.as_ref().and_then(slot)
    }

    /// Whether the backend is currently considered healthy (and enabled).
    pub(crate) fn ready(&self, b: &Backend) -> bool {
        match self {
            Selector::RoundRobin(lb) | Selector::LeastConnections(lb, _, _) => {
                lb.backends().ready(b)
            }
            Selector::Random(lb) => lb.backends().ready(b),
            Selector::Consistent(lb) => lb.backends().ready(b),
        }
    }
}

/// The slot index stored in a backend's extensions when the pool was built.
pub(crate) fn slot(b: &Backend) -> Option<usize> {
    b.ext.get::<SlotIndex>().map(|s| s.0)
}

/// Marks a [`Backend`] with its position in [`super::Upstream`]'s slot list.
#[derive(Clone, Copy)]
pub(crate) struct SlotIndex(pub usize);

/// Fewest in-flight requests per unit of weight; ties rotate so equal backends share load.
fn least_loaded(
    lb: &LoadBalancer<RoundRobin>,
    rotor: &AtomicUsize,
    backends: &[Backend],
    accept: &impl Fn(usize) -> bool,
    load: &impl Fn(usize) -> usize,
) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    // Scores first, from atomics only; Pingora's health table (a hash of the backend and a
    // map lookup, ~100 ns) is asked about the winner, and about the others only when the
    // winner is down. `backends` is indexed by slot, so no per-backend extension lookup.
    let start = rotor.fetch_add(1, Ordering::Relaxed) % n;
    let lowest = |ready: &dyn Fn(&Backend) -> bool| {
        let mut best: Option<(usize, usize)> = None; // (load * 1e6 / weight, slot)
        for i in (start..n).chain(0..start) {
            if !accept(i) || !ready(&backends[i]) {
                continue;
            }
            let score = load(i) * 1_000_000 / backends[i].weight.max(1);
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    };
    match lowest(&|_| true) {
        Some(i) if lb.backends().ready(&backends[i]) => Some(i),
        Some(_) => lowest(&|b| lb.backends().ready(b)),
        None => None,
    }
}
