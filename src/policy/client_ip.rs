//! The client's IP: the TCP peer, or, behind trusted proxies, the right-most untrusted
//! `X-Forwarded-For` entry. `X-Forwarded-For` is never trusted unless `trusted_proxies` is set.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// CIDRs whose `X-Forwarded-For` claims are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`) or bare addresses; returns the first bad entry on error.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, (usize, String)> {
        let nets = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| (i, format!("invalid CIDR {e:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { nets })
    }

    fn trusts(&self, ip: &IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// Whether `peer` is a trusted proxy, whose forwarding headers are believed.
    pub fn trusts_peer(&self, peer: Option<IpAddr>) -> bool {
        !self.nets.is_empty() && peer.is_some_and(|p| self.trusts(&p))
    }

    /// The client IP for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if self.nets.is_empty() || !self.trusts(&peer) {
            return Some(peer);
        }
        // Walk right to left across every X-Forwarded-For header; the first hop we do not
        // trust is the client. If all are trusted, the left-most is the best we know.
        let mut last = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else {
                return Some(last);
            };
            for hop in text.rsplit(',') {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                    return Some(last);
                };
                if !self.trusts(&ip) {
                    return Some(ip);
                }
                last = ip;
            }
        }
        Some(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", xff.parse().unwrap());
        m
    }

    #[test]
    fn xff_only_behind_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(Some(peer), &h("1.2.3.4")), Some(peer));
        let tp = TrustedProxies::parse(&["10.0.0.0/8".into()]).unwrap();
        assert_eq!(
            tp.client_ip(Some(peer), &h("9.9.9.9, 1.2.3.4, 10.1.1.1")),
            Some("1.2.3.4".parse().unwrap())
        );
        let outsider: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(tp.client_ip(Some(outsider), &h("1.2.3.4")), Some(outsider));
        assert!(TrustedProxies::parse(&["nope".into()]).is_err());
    }
}
