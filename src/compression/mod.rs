//! Response compression policy on top of Pingora's compression module.
//!
//! Pingora picks the first algorithm a client lists and ignores q-values, and has a fixed
//! minimum size and content-type list. So the gateway negotiates itself (q-values, `identity`,
//! `*`, server preference), shows the module only the chosen token, and switches the module
//! off for responses that must not be compressed.

mod brotli;
mod inflate;

pub use self::brotli::BrotliStream;
pub use inflate::{Inflate, InflateError};

use crate::config::{CompressionConfig, ConfigError, KeyPath};
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use pingora_core::protocols::http::compression::Algorithm;
use pingora_http::ResponseHeader;

/// The algorithm and its content-coding token for a configured name (`gzip`, `br`, `zstd`).
pub fn parse_algorithm(name: &str) -> Option<(Algorithm, &'static str)> {
    match name {
        "gzip" => Some((Algorithm::Gzip, "gzip")),
        "br" => Some((Algorithm::Brotli, "br")),
        "zstd" => Some((Algorithm::Zstd, "zstd")),
        _ => None,
    }
}

/// A route's compiled compression settings.
#[derive(Debug, Clone)]
pub struct CompressionPolicy {
    /// Bodies known to be smaller are sent as they are.
    pub min_size: usize,
    /// Level handed to every algorithm.
    pub level: u32,
    /// Decompress upstream gzip for clients that do not accept it.
    pub decompress: bool,
    /// Most bytes one decompressed response may inflate to.
    pub max_decompressed_bytes: u64,
    algorithms: Vec<(Algorithm, &'static str)>,
    content_types: Vec<String>,
}

impl CompressionPolicy {
    /// Merges a route's section over the global one; `None` when compression is off.
    pub fn build(
        global: &CompressionConfig,
        route: &CompressionConfig,
        path: &KeyPath,
    ) -> Result<Option<CompressionPolicy>, ConfigError> {
        if !route.enabled.or(global.enabled).unwrap_or(false) {
            return Ok(None);
        }
        let algorithms = route
            .algorithms
            .clone()
            .or_else(|| global.algorithms.clone())
            .unwrap_or_else(|| vec!["zstd".into(), "br".into(), "gzip".into()]);
        let algorithms = algorithms
            .iter()
            .enumerate()
            .map(|(i, a)| {
                parse_algorithm(a).ok_or_else(|| {
                    ConfigError::at(
                        &path.key("algorithms").index(i),
                        format!("unknown algorithm {a:?}: expected gzip, br or zstd"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let level = route.level.or(global.level).unwrap_or(6);
        if !(1..=9).contains(&level) {
            return Err(ConfigError::at(&path.key("level"), "must be 1-9"));
        }
        let content_types = route
            .content_types
            .clone()
            .or_else(|| global.content_types.clone())
            .unwrap_or_else(|| {
                [
                    "text/*",
                    "application/json",
                    "application/javascript",
                    "application/xml",
                    "image/svg+xml",
                ]
                .map(String::from)
                .to_vec()
            })
            .into_iter()
            .map(|t| t.to_ascii_lowercase())
            .collect();
        Ok(Some(CompressionPolicy {
            min_size: route.min_size.or(global.min_size).unwrap_or(1024),
            level,
            decompress: route.decompress.or(global.decompress).unwrap_or(true),
            max_decompressed_bytes: route
                .max_decompressed_bytes
                .or(global.max_decompressed_bytes)
                .unwrap_or(64 * 1024 * 1024),
            algorithms,
            content_types,
        }))
    }

    /// The `Accept-Encoding` to show Pingora: the server's most preferred algorithm among
    /// those with the client's highest q-value first (Pingora compresses with the first token),
    /// then the client's other acceptable codings (so an upstream body already encoded in one
    /// of them passes through), or `identity`.
    pub fn negotiate(&self, accept: Option<&HeaderValue>) -> HeaderValue {
        let Some(text) = accept.and_then(|v| v.to_str().ok()) else {
            return HeaderValue::from_static("identity");
        };
        let mut star: Option<f32> = None;
        let mut explicit: Vec<(&str, f32)> = Vec::new();
        for item in text.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if coding == "*" {
                star = Some(q);
            } else if !coding.is_empty() {
                explicit.push((coding, q));
            }
        }
        let q_of = |name: &str| {
            explicit
                .iter()
                .find(|(c, _)| c.eq_ignore_ascii_case(name))
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0.0)
        };
        let mut best: Option<(&'static str, f32)> = None;
        for (_, token) in &self.algorithms {
            let q = q_of(token);
            if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((token, q));
            }
        }
        let Some((chosen, _)) = best else {
            return HeaderValue::from_static("identity");
        };
        let mut list = String::from(chosen);
        for token in ["gzip", "br", "zstd"] {
            if token != chosen && q_of(token) > 0.0 {
                list.push_str(", ");
                list.push_str(token);
            }
        }
        HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static("identity"))
    }

    /// Whether this response may be compressed (Pingora still skips already-encoded bodies).
    pub fn allows(&self, resp: &ResponseHeader, head: bool) -> bool {
        let status = resp.status.as_u16();
        if head || matches!(status, 204 | 206 | 304) || resp.status.is_informational() {
            return false;
        }
        let h = &resp.headers;
        if h.get(CONTENT_ENCODING)
            .is_some_and(|e| e.as_bytes() != b"identity")
        {
            // Left to Pingora: it passes the body through, or decompresses it when asked to.
            return true;
        }
        if h.get_all(CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        }) {
            return false;
        }
        let small = h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|len| len < self.min_size);
        if small {
            return false;
        }
        let Some(ct) = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let ct = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        self.content_types
            .iter()
            .any(|t| match t.strip_suffix('*') {
                Some(prefix) => ct.starts_with(prefix),
                None => ct == *t,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CompressionPolicy {
        let on = CompressionConfig {
            enabled: Some(true),
            ..Default::default()
        };
        CompressionPolicy::build(&CompressionConfig::default(), &on, &KeyPath::root())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn negotiation_honours_q_values_and_server_preference() {
        let p = policy();
        let n = |s: &str| p.negotiate(Some(&HeaderValue::from_str(s).unwrap()));
        assert_eq!(n("gzip, br, zstd"), "zstd, gzip, br");
        assert_eq!(n("gzip;q=1, br;q=0.5"), "gzip, br");
        assert_eq!(n("gzip;q=0, br;q=0"), "identity");
        assert_eq!(n("*"), "zstd, gzip, br");
        assert_eq!(n("*;q=0.5, zstd;q=0"), "br, gzip");
        assert_eq!(n("br;q=1, gzip;q=0.5"), "br, gzip");
        assert_eq!(n("identity"), "identity");
        assert_eq!(p.negotiate(None), "identity");
    }
}
