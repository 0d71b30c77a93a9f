//! Where a proxying route sends a request: one upstream, or a weighted split between several,
//! optionally sticky per client.

use crate::upstream::UpstreamId;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The upstream(s) of a proxying route.
#[derive(Debug)]
pub enum Target {
    /// Always this upstream.
    One(UpstreamId),
    /// A weighted split.
    Split(Split),
}

impl Target {
    /// Chooses the upstream for a request.
    pub fn place(&self, headers: &HeaderMap) -> Placement {
        match self {
            Target::One(upstream) => Placement {
                upstream: *upstream,
                set_cookie: None,
            },
            Target::Split(split) => split.place(headers),
        }
    }
}

/// What keeps a client on one side of a split.
#[derive(Debug)]
pub enum Sticky {
    /// A cookie that names the side; set on the response when the client has none (or an
    /// unknown one).
    Cookie(Box<str>),
    /// A request header whose value is hashed to a side.
    Header(HeaderName),
}

/// One side of a split.
#[derive(Debug)]
struct Side {
    upstream: UpstreamId,
    name: Arc<str>,
    /// Cumulative weight up to and including this side.
    until: u64,
    /// `Set-Cookie` value for a sticky cookie naming this side.
    set_cookie: Option<HeaderValue>,
}

/// A weighted split between upstreams.
#[derive(Debug)]
pub struct Split {
    sides: Box<[Side]>,
    total: u64,
    sticky: Option<Sticky>,
    /// Requests placed so far. Request `n` takes position `n * stride % total` of the weight
    /// line: with `stride` coprime to `total` every `total` requests visit each position once
    /// (exact shares, no random source), and consecutive requests are spread over the sides.
    next: AtomicU64,
    stride: u64,
}

/// Where a split sent a request.
#[derive(Debug)]
pub struct Placement {
    /// The upstream chosen.
    pub upstream: UpstreamId,
    /// A `Set-Cookie` for the response, when a sticky cookie was missing.
    pub set_cookie: Option<HeaderValue>,
}

impl Split {
    /// A split over `(upstream, upstream name, weight)`.
    pub fn new(sides: &[(UpstreamId, Arc<str>, u64)], sticky: Option<Sticky>) -> Split {
        let mut until = 0;
        let sides = sides
            .iter()
            .map(|(upstream, name, weight)| {
                until += weight;
                let set_cookie = match &sticky {
                    Some(Sticky::Cookie(c)) => HeaderValue::from_str(&format!(
                        "{c}={name}; Path=/; HttpOnly; SameSite=Lax"
                    ))
                    .ok(),
                    _ => None,
                };
                Side {
                    upstream: *upstream,
                    name: name.clone(),
                    until,
                    set_cookie,
                }
            })
            .collect();
        let total = until.max(1);
        Split {
            sides,
            total,
            sticky,
            next: AtomicU64::new(0),
            stride: stride_for(total),
        }
    }

    fn next_point(&self) -> u64 {
        self.next
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(self.stride)
    }

    fn at(&self, point: u64) -> &Side {
        let point = point % self.total;
        let i = self.sides.partition_point(|s| s.until <= point);
        &self.sides[i.min(self.sides.len() - 1)]
    }

    fn by_name(&self, name: &str) -> Option<&Side> {
        self.sides.iter().find(|s| &*s.name == name)
    }

    /// Chooses the side for a request.
    pub fn place(&self, headers: &HeaderMap) -> Placement {
        match &self.sticky {
            Some(Sticky::Cookie(c)) => {
                if let Some(side) = crate::plugin::cookie(headers, c).and_then(|v| self.by_name(v))
                {
                    return Placement {
                        upstream: side.upstream,
                        set_cookie: None,
                    };
                }
                let side = self.at(self.next_point());
                Placement {
                    upstream: side.upstream,
                    set_cookie: side.set_cookie.clone(),
                }
            }
            Some(Sticky::Header(h)) => {
                let side = match headers.get(h) {
                    Some(v) => self.at(fnv1a(v.as_bytes())),
                    None => self.at(self.next_point()),
                };
                Placement {
                    upstream: side.upstream,
                    set_cookie: None,
                }
            }
            None => Placement {
                upstream: self.at(self.next_point()).upstream,
                set_cookie: None,
            },
        }
    }

    /// The upstreams of the split, in order.
    pub fn upstreams(&self) -> impl Iterator<Item = UpstreamId> + '_ {
        self.sides.iter().map(|s| s.upstream)
    }
}

/// A step near the golden ratio of `total` that is coprime to it.
fn stride_for(total: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let start = (total as f64 * 0.618) as u64;
    (start.max(1)..).find(|s| gcd(*s, total) == 1).unwrap_or(1)
}

/// FNV-1a, 64 bits: a stable spread of header values over the weight line (the same value
/// lands on the same side in every worker and after every restart). Not for secrets.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    fn split(sticky: Option<Sticky>) -> Split {
        Split::new(
            &[
                (UpstreamId::new(0), "v1".into(), 90),
                (UpstreamId::new(1), "v2".into(), 10),
            ],
            sticky,
        )
    }

    #[test]
    fn shares_are_exact_over_the_weight_total() {
        let s = split(None);
        let h = HeaderMap::new();
        let v2 = (0..1000)
            .filter(|_| s.place(&h).upstream.index() == 1)
            .count();
        assert_eq!(v2, 100);
    }

    #[test]
    fn consecutive_requests_alternate_between_even_sides() {
        let s = Split::new(
            &[
                (UpstreamId::new(0), "a".into(), 50),
                (UpstreamId::new(1), "b".into(), 50),
            ],
            None,
        );
        let h = HeaderMap::new();
        let first: Vec<usize> = (0..10).map(|_| s.place(&h).upstream.index()).collect();
        assert!(first.contains(&0) && first.contains(&1), "{first:?}");
    }

    #[test]
    fn cookies_keep_clients_and_unknown_sides_are_replaced() {
        let s = split(Some(Sticky::Cookie("avx-split".into())));
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; avx-split=v2"));
        for _ in 0..50 {
            let p = s.place(&h);
            assert_eq!((p.upstream.index(), p.set_cookie.is_none()), (1, true));
        }
        h.insert(COOKIE, HeaderValue::from_static("avx-split=v9"));
        let p = s.place(&h);
        assert!(p.set_cookie.is_some(), "an unknown side gets a new cookie");
    }

    #[test]
    fn header_values_always_land_on_the_same_side() {
        let s = split(Some(Sticky::Header(HeaderName::from_static("x-user"))));
        let mut sides = [0usize; 2];
        for user in 0..2000 {
            let mut h = HeaderMap::new();
            h.insert(
                "x-user",
                HeaderValue::from_str(&format!("user-{user}")).expect("value"),
            );
            let first = s.place(&h).upstream;
            assert!((0..5).all(|_| s.place(&h).upstream == first));
            sides[first.index()] += 1;
        }
        assert!((150..250).contains(&sides[1]), "{sides:?}");
    }
}
