//! Leaf values of the YAML model that are parsed into their runtime types once, by serde, so
//! validation and compilation cannot disagree.

use http::HeaderName;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// Implements `Deserialize` for a type parsed from a YAML string by its `TryFrom<String>`.
///
/// The conversion runs inside the string visitor rather than through `#[serde(try_from)]`, so
/// serde_yaml locates an error at the value itself (`allow[1]`, line and column of the value)
/// instead of at the map that holds it.
macro_rules! deserialize_via_try_from {
    ($t:ty, $expecting:literal) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$t, E> {
                        <$t>::try_from(s.to_string()).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}
pub(crate) use deserialize_via_try_from;

/// A CIDR such as `10.0.0.0/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

deserialize_via_try_from!(Cidr, "a CIDR or an IP address");

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|ip| Cidr(IpNet::from(ip)))
            .map_err(|_| format!("invalid CIDR or address {s:?}"))
    }
}

/// A header field name, lowercased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeaderNameConf(pub HeaderName);

deserialize_via_try_from!(HeaderNameConf, "a header name");

impl TryFrom<String> for HeaderNameConf {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        HeaderName::from_bytes(s.as_bytes())
            .map(HeaderNameConf)
            .map_err(|_| format!("invalid header name {s:?}"))
    }
}

/// A regular expression, compiled at load.
#[derive(Debug, Clone)]
pub struct RegexConf(pub regex::Regex);

deserialize_via_try_from!(RegexConf, "a regular expression");

impl TryFrom<String> for RegexConf {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        regex::Regex::new(&s)
            .map(RegexConf)
            .map_err(|e| format!("invalid regex {s:?}: {e}"))
    }
}

/// Where a credential is read from: `header:NAME`, `query:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// A request header (`Bearer ` is stripped from `authorization`).
    Header(HeaderName),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

deserialize_via_try_from!(CredentialSource, "header:NAME, query:NAME or cookie:NAME");

impl TryFrom<String> for CredentialSource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad =
            || format!("invalid source {s:?}: expected header:NAME, query:NAME or cookie:NAME");
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        match kind {
            "header" => HeaderName::from_bytes(name.as_bytes())
                .map(CredentialSource::Header)
                .map_err(|_| bad()),
            "query" => Ok(CredentialSource::Query(name.to_string())),
            "cookie" => Ok(CredentialSource::Cookie(name.to_string())),
            _ => Err(bad()),
        }
    }
}

/// A YAML map of header names to values, in file order, both parsed by serde.
#[derive(Debug, Clone)]
pub struct HeaderPairs<V>(pub Vec<(HeaderName, V)>);

impl<V> Default for HeaderPairs<V> {
    fn default() -> Self {
        HeaderPairs(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for HeaderPairs<V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for PairsVisitor<V> {
            type Value = HeaderPairs<V>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of header names to values")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some(HeaderNameConf(name)) = map.next_key()? {
                    pairs.push((name, map.next_value()?));
                }
                Ok(HeaderPairs(pairs))
            }
        }
        d.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

/// `servers[].address`: an `ip:port`, or a DNS `name:port` that is resolved at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddress {
    /// An IP literal: one backend, never resolved.
    Ip(std::net::SocketAddr),
    /// A DNS name and the port its addresses are reached on.
    Name {
        /// The name as written, without a trailing dot.
        host: String,
        /// The port every resolved address is reached on.
        port: u16,
    },
}

deserialize_via_try_from!(ServerAddress, "ip:port or name:port");

impl TryFrom<String> for ServerAddress {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(addr) = s.parse() {
            return Ok(ServerAddress::Ip(addr));
        }
        let bad = |why: &str| {
            format!("invalid address {s:?}: {why}; expected ip:port or name:port, e.g. 127.0.0.1:8080 or api.internal:8080")
        };
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(bad("the port is required"));
        };
        let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') || host.contains(['[', ']']) {
            // Looks like an IP literal that did not parse: never send it to DNS.
            return Err(bad("invalid IP address"));
        }
        if !is_dns_name(host) {
            return Err(bad("invalid DNS name"));
        }
        Ok(ServerAddress::Name {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddress::Ip(a) => write!(f, "{a}"),
            ServerAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// RFC 1123 host name: dot-separated labels of 1 to 63 letters, digits and inner hyphens
/// (underscores allowed too, as in SRV-style service names), at most 253 bytes.
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod server_address_tests {
    use super::ServerAddress;

    fn parse(s: &str) -> Result<ServerAddress, String> {
        ServerAddress::try_from(s.to_string())
    }

    #[test]
    fn ip_literals_and_names_parse() {
        assert_eq!(
            parse("127.0.0.1:80"),
            Ok(ServerAddress::Ip("127.0.0.1:80".parse().unwrap()))
        );
        assert!(matches!(parse("[::1]:80"), Ok(ServerAddress::Ip(_))));
        assert_eq!(
            parse("API.internal.:8080"),
            Ok(ServerAddress::Name {
                host: "api.internal".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse("svc_x.ns:1").map(|a| a.to_string()).as_deref(),
            Ok("svc_x.ns:1")
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        for bad in [
            "api.internal",
            "api.internal:",
            "api.internal:http",
            "api.internal:0",
            "api.internal:70000",
            "300.1.1.1:80",
            "-api:80",
            "a..b:80",
            "a b:80",
            ":80",
            "[::1:80",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}

/// An OTLP/HTTP endpoint: an absolute `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(pub http::Uri);

deserialize_via_try_from!(OtlpEndpoint, "an http:// or https:// URL");

impl Default for OtlpEndpoint {
    fn default() -> Self {
        OtlpEndpoint(http::Uri::from_static("http://127.0.0.1:4318/v1/traces"))
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("{s:?}: expected an http:// or https:// URL"));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{s:?}: the URL has no host"));
        }
        Ok(OtlpEndpoint(uri))
    }
}

/// A sampling ratio in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRatio(pub f64);

impl TryFrom<f64> for SampleRatio {
    type Error = String;

    fn try_from(r: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&r) {
            Ok(SampleRatio(r))
        } else {
            Err(format!("{r} is not in [0, 1]"))
        }
    }
}

impl<'de> Deserialize<'de> for SampleRatio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `f64::deserialize` + map, so the error is located at the value.
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SampleRatio;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number in [0, 1]")
            }

            fn visit_f64<E: serde::de::Error>(self, r: f64) -> Result<SampleRatio, E> {
                SampleRatio::try_from(r).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, r: u64) -> Result<SampleRatio, E> {
                self.visit_f64(r as f64)
            }

            fn visit_i64<E: serde::de::Error>(self, r: i64) -> Result<SampleRatio, E> {
                self.visit_f64(r as f64)
            }
        }
        d.deserialize_f64(V)
    }
}
/// A Redis URL (`redis://`, `rediss://`, `redis+unix://`), checked at load; nothing connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

deserialize_via_try_from!(RedisUrl, "a redis:// or rediss:// URL");

impl TryFrom<String> for RedisUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match redis::IntoConnectionInfo::into_connection_info(s.as_str()) {
            Ok(_) => Ok(RedisUrl(s)),
            Err(e) => Err(format!("invalid Redis URL {s:?}: {e}")),
        }
    }
}
