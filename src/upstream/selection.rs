//! Backend selection: Pingora's weighted round robin, random and ketama, plus least-connections.

use super::BackendSlot;
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
    /// Picks a ready backend whose slot passes `accept`; `slots` is the upstream's current
    /// set, which least-connections scans (the other algorithms use Pingora's selector).
    pub(crate) fn select(
        &self,
        key: &[u8],
        slots: &[Arc<BackendSlot>],
        accept: impl Fn(&BackendSlot) -> bool,
    ) -> Option<Arc<BackendSlot>> {
        let ok = |b: &Backend, healthy: bool| healthy && slot(b).is_some_and(&accept);
        let picked = match self {
            Selector::RoundRobin(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::Random(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::Consistent(lb) => lb.select_with(key, MAX_ITERATIONS, ok),
            Selector::LeastConnections(lb, rotor) => {
                return least_loaded(lb, rotor, slots, &accept).cloned();
            }
        };
        // The returned backend is our own copy: take its slot out rather than clone it again.
        picked
            .and_then(|mut b| b.ext.remove::<SlotRef>())
            .map(|s| s.0)
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

/// The slot a backend carries in its extensions.
fn slot(b: &Backend) -> Option<&BackendSlot> {
    b.ext.get::<SlotRef>().map(|s| &*s.0)
}

/// Marks a [`Backend`] with its [`BackendSlot`], so a selector of any generation hands back
/// the slot it was built with.
#[derive(Clone)]
pub(crate) struct SlotRef(pub Arc<BackendSlot>);

/// Fewest in-flight requests per unit of weight; ties rotate so equal backends share load.
fn least_loaded<'a>(
    lb: &LoadBalancer<RoundRobin>,
    rotor: &AtomicUsize,
    slots: &'a [Arc<BackendSlot>],
    accept: &impl Fn(&BackendSlot) -> bool,
) -> Option<&'a Arc<BackendSlot>> {
    let n = slots.len();
    if n == 0 {
        return None;
    }
    // Scores first, from atomics only; Pingora's health table (a hash of the backend and a
    // map lookup, ~100 ns) is asked about the winner, and about the others only when the
    // winner is down.
    let start = rotor.fetch_add(1, Ordering::Relaxed) % n;
    let lowest = |ready: &dyn Fn(&BackendSlot) -> bool| {
        let mut best: Option<(usize, usize)> = None; // (load * 1e6 / weight, index)
        for i in (start..n).chain(0..start) {
            let s = &slots[i];
            if !accept(s) || !ready(s) {
                continue;
            }
            let score = s.inflight.load(Ordering::Relaxed) * 1_000_000 / s.weight.max(1);
            if best.is_none_or(|(b, _)| score < b) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| &slots[i])
    };
    let ready = |s: &BackendSlot| lb.backends().ready(s.backend());
    match lowest(&|_| true) {
        Some(s) if ready(s) => Some(s),
        Some(_) => lowest(&ready),
        None => None,
    }
}
