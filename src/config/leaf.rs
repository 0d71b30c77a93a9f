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
