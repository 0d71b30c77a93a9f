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
    LeastConnections(Arc<LoadBalancer<RoundRobin>>, AtomicUsize),
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
            Selector::LeastConnections(lb, rotor) => {
                return least_loaded(lb, rotor, &accept, &load);
            }
        };
        picked.as_ref().and_then(slot)
    }

    /// Whether the backend is currently considered healthy (and enabled).
    pub(crate) fn ready(&self, b: &Backend) -> bool {
        match self {
            Selector::RoundRobin(lb) | Selector::LeastConnections(lb, _) => lb.backends().ready(b),
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
    accept: &impl Fn(usize) -> bool,
    load: &impl Fn(usize) -> usize,
) -> Option<usize> {
    let backends = lb.backends().get_backend();
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let start = rotor.fetch_add(1, Ordering::Relaxed) % n;
    let mut best: Option<(usize, usize, usize)> = None; // (load * 1e6 / weight, slot, weight)
    for b in backends.iter().cycle().skip(start).take(n) {
        let Some(i) = slot(b) else { continue };
        if !accept(i) || !lb.backends().ready(b) {
            continue;
        }
        let weight = b.weight.max(1);
        let score = load(i) * 1_000_000 / weight;
        if best.is_none_or(|(s, _, _)| score < s) {
            best = Some((score, i, weight));
        }
    }
    best.map(|(_, i, _)| i)
}
