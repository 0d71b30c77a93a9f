//! `ip_restriction`: allow and deny lists of CIDRs, checked against the client IP (after
//! `trusted_proxies`). A deny entry wins over an allow entry.

use crate::config::{Cidr, ConfigError};
use crate::plugin::{Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use async_trait::async_trait;
use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// The YAML of `ip_restriction`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// When not empty, only these clients are let through.
    #[serde(default)]
    pub allow: Vec<Cidr>,
    /// These clients are refused, even when `allow` lists them.
    #[serde(default)]
    pub deny: Vec<Cidr>,
    /// Status of a refusal.
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    403
}

/// A set of CIDRs as sorted, merged address ranges: a lookup is a binary search, whatever the
/// number of entries.
#[derive(Debug, Default, Clone)]
pub struct CidrSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl CidrSet {
    /// Compiles a list of CIDRs.
    pub fn new(cidrs: &[Cidr]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for Cidr(net) in cidrs {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        CidrSet {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Whether the set holds no range.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in one of the ranges (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(v6)),
            },
        }
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.succ() => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|&(lo, _)| lo <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    /// The next value, saturating (adjacent ranges merge).
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// The compiled `ip_restriction`.
pub struct IpRestriction {
    allow: CidrSet,
    deny: CidrSet,
    status: StatusCode,
}

impl IpRestriction {
    /// Compiles the lists.
    pub fn build(c: &IpRestrictionConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        let status = StatusCode::from_u16(c.status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| {
                cx.error("status", format!("{} is not a 4xx or 5xx status", c.status))
            })?;
        if c.allow.is_empty() && c.deny.is_empty() {
            return Err(cx.error("", "needs an allow or a deny list"));
        }
        Ok(IpRestriction {
            allow: CidrSet::new(&c.allow),
            deny: CidrSet::new(&c.deny),
            status,
        })
    }

    /// Whether a client may pass (a client without an IP passes only when nothing is allowed
    /// explicitly).
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        match ip {
            Some(ip) => {
                !self.deny.contains(ip) && (self.allow.is_empty() || self.allow.contains(ip))
            }
            None => self.allow.is_empty(),
        }
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    fn phase(&self) -> Phase {
        Phase::Access
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        if self.admits(req.info().client_ip) {
            Flow::Continue
        } else {
            Flow::Reply(Reply::forbidden(self.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> CidrSet {
        let cidrs: Vec<Cidr> = list
            .iter()
            .map(|s| Cidr::try_from(s.to_string()).expect("cidr"))
            .collect();
        CidrSet::new(&cidrs)
    }

    #[test]
    fn ranges_merge_and_match() {
        let s = set(&[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "192.168.1.7",
            "2001:db8::/32",
            "11.0.0.0/8",
        ]);
        assert_eq!(
            s.v4.len(),
            2,
            "10/8 swallows 10.1/16 and is adjacent to 11/8"
        );
        for ip in [
            "10.2.3.4",
            "11.255.255.255",
            "192.168.1.7",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(s.contains(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["9.255.255.255", "12.0.0.0", "192.168.1.8", "2001:db9::1"] {
            assert!(!s.contains(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn deny_wins_and_missing_ips_pass_only_without_allow() {
        let r = IpRestriction {
            allow: set(&["10.0.0.0/8"]),
            deny: set(&["10.0.66.0/24"]),
            status: StatusCode::FORBIDDEN,
        };
        assert!(r.admits(Some("10.0.1.1".parse().expect("ip"))));
        assert!(!r.admits(Some("10.0.66.1".parse().expect("ip"))));
        assert!(!r.admits(Some("8.8.8.8".parse().expect("ip"))));
        assert!(!r.admits(None));
    }
}
