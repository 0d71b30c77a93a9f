//! The request target and the Host (RFC 9112 §3.2, RFC 9110 §7.2): which target forms are
//! accepted, and the one effective host the gateway routes, keys the cache and forwards on.

use pingora_http::authority::{raw_target_authority, RawTargetAuthority};
use std::fmt;

/// Why a request's target or Host was refused; every case is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetError {
    /// Not origin-form, absolute-form with `http`/`https`, or `*` for OPTIONS.
    Form,
    /// `*` with a method other than OPTIONS.
    Asterisk,
    /// An HTTP/1.1 request without `Host` (or HTTP/2 without `:authority` and `host`).
    MissingHost,
    /// `Host` and the target's authority (or `:authority`) name different hosts.
    HostMismatch,
    /// A host that is not a DNS name, an IPv4 address or a bracketed IPv6 address.
    BadHost,
    /// A port that is not a number in 0..=65535.
    BadPort,
}

impl TargetError {
    /// A short reason, for the 400 body and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetError::Form => "unsupported request-target form",
            TargetError::Asterisk => "asterisk-form is only allowed for OPTIONS",
            TargetError::MissingHost => "missing Host header",
            TargetError::HostMismatch => "Host does not match the request-target",
            TargetError::BadHost => "invalid host",
            TargetError::BadPort => "invalid port",
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TargetError {}

/// A classified request target; the slices borrow the raw target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/path?query`.
    Origin {
        /// The path, starting with `/`.
        path: &'a [u8],
        /// The query, without its `?`.
        query: Option<&'a [u8]>,
    },
    /// `http://authority/path?query` (or `https`).
    Absolute {
        /// The authority, verbatim.
        authority: &'a [u8],
        /// The path (`/` when the target had none).
        path: &'a [u8],
        /// The query, without its `?`.
        query: Option<&'a [u8]>,
    },
    /// `*` (OPTIONS only).
    Asterisk,
}

impl<'a> Target<'a> {
    /// The path (`*` for asterisk-form).
    pub fn path(&self) -> &'a [u8] {
        match self {
            Target::Origin { path, .. } | Target::Absolute { path, .. } => path,
            Target::Asterisk => b"*",
        }
    }

    /// The query, without its `?`.
    pub fn query(&self) -> Option<&'a [u8]> {
        match self {
            Target::Origin { query, .. } | Target::Absolute { query, .. } => *query,
            Target::Asterisk => None,
        }
    }

    /// The authority of an absolute-form target.
    pub fn authority(&self) -> Option<&'a [u8]> {
        match self {
            Target::Absolute { authority, .. } => Some(authority),
            _ => None,
        }
    }
}

fn split_query(pq: &[u8]) -> (&[u8], Option<&[u8]>) {
    match pq.iter().position(|&b| b == b'?') {
        Some(q) => (&pq[..q], Some(&pq[q + 1..])),
        None => (pq, None),
    }
}

/// Classifies a raw request target. Anything but origin-form, `http`/`https` absolute-form
/// and `*` for OPTIONS is refused: `x:/admin`, `admin`, and authority-form outside CONNECT
/// (the gateway does not proxy CONNECT).
pub fn parse_target(raw: &[u8], is_options: bool) -> Result<Target<'_>, TargetError> {
    if raw == b"*" {
        return if is_options {
            Ok(Target::Asterisk)
        } else {
            Err(TargetError::Asterisk)
        };
    }
    if raw.first() == Some(&b'/') {
        let (path, query) = split_query(raw);
        return Ok(Target::Origin { path, query });
    }
    // The same classifier Pingora reconciles `Host` with, so both agree on the authority.
    match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } if scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https") => {
            let (path, query) = split_query(path_and_query);
            let path: &[u8] = if path.is_empty() { b"/" } else { path };
            if path.first() != Some(&b'/') {
                return Err(TargetError::Form);
            }
            Ok(Target::Absolute {
                authority,
                path,
                query,
            })
        }
        _ => Err(TargetError::Form),
    }
}

/// A host in normal form: lowercase, no trailing dot, no default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalHost {
    /// The normalized text, when it differs from the input (otherwise the input is normal).
    pub rewritten: Option<String>,
    /// Length of the name (without `:port`) in the normalized text.
    pub name_len: usize,
}

/// Normalizes `host[:port]` as sent in `Host`, `:authority` or an absolute-form target.
///
/// A name is a dot-separated sequence of labels of ASCII letters, digits, `-` and `_` (at
/// most 253 bytes); IPv4 addresses are names of digits; IPv6 addresses come in brackets.
/// `default_port` (80 or 443, from the connection) is removed, and so is an empty port.
pub fn normalize_host(raw: &[u8], default_port: u16) -> Result<NormalHost, TargetError> {
    let (name, port) = split_port(raw)?;
    let mut rewrite = false;
    let name = if name.first() == Some(&b'[') {
        let inner = name
            .strip_prefix(b"[")
            .and_then(|n| n.strip_suffix(b"]"))
            .ok_or(TargetError::BadHost)?;
        let text = std::str::from_utf8(inner).map_err(|_| TargetError::BadHost)?;
        text.parse::<std::net::Ipv6Addr>()
            .map_err(|_| TargetError::BadHost)?;
        rewrite |= inner.iter().any(u8::is_ascii_uppercase);
        name
    } else {
        let trimmed = name.strip_suffix(b".").unwrap_or(name);
        rewrite |= trimmed.len() != name.len();
        if trimmed.is_empty() || trimmed.len() > 253 {
            return Err(TargetError::BadHost);
        }
        for label in trimmed.split(|&b| b == b'.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(TargetError::BadHost);
            }
        }
        rewrite |= trimmed.iter().any(u8::is_ascii_uppercase);
        trimmed
    };
    let port = match port {
        None => None,
        Some(p) => {
            let n = parse_port(p)?;
            match n {
                None => {
                    rewrite = true;
                    None
                }
                Some(n) if n == default_port => {
                    rewrite = true;
                    None
                }
                Some(n) => {
                    rewrite |= p.len() != decimal_len(n);
                    Some(n)
                }
            }
        }
    };
    let name_len = name.len();
    if !rewrite {
        return Ok(NormalHost {
            rewritten: None,
            name_len,
        });
    }
    // Only ASCII survives the checks above.
    let mut text = String::from_utf8_lossy(name).to_ascii_lowercase();
    if let Some(p) = port {
        text.push(':');
        text.push_str(&p.to_string());
    }
    Ok(NormalHost {
        rewritten: Some(text),
        name_len,
    })
}

fn decimal_len(n: u16) -> usize {
    match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1000..=9999 => 4,
        _ => 5,
    }
}

/// Splits `name[:port]`; a bracketed IPv6 literal keeps its colons.
fn split_port(raw: &[u8]) -> Result<(&[u8], Option<&[u8]>), TargetError> {
    if raw.first() == Some(&b'[') {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(TargetError::BadHost)?;
        let (name, rest) = raw.split_at(close + 1);
        return match rest {
            [] => Ok((name, None)),
            [b':', port @ ..] => Ok((name, Some(port))),
            _ => Err(TargetError::BadHost),
        };
    }
    match raw.iter().position(|&b| b == b':') {
        Some(c) => Ok((&raw[..c], Some(&raw[c + 1..]))),
        None => Ok((raw, None)),
    }
}

/// `None` for an empty port (RFC 3986 §3.2.3 allows it), the number otherwise.
fn parse_port(p: &[u8]) -> Result<Option<u16>, TargetError> {
    if p.is_empty() {
        return Ok(None);
    }
    if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err(TargetError::BadPort);
    }
    let n = p
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(n).map(Some).map_err(|_| TargetError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(raw: &str) -> Result<String, TargetError> {
        normalize_host(raw.as_bytes(), 80).map(|h| h.rewritten.unwrap_or_else(|| raw.to_string()))
    }

    #[test]
    fn target_forms() {
        assert_eq!(
            parse_target(b"/a?b=c", false),
            Ok(Target::Origin {
                path: b"/a",
                query: Some(b"b=c")
            })
        );
        assert_eq!(
            parse_target(b"http://Admin.example.com/x?y", false),
            Ok(Target::Absolute {
                authority: b"Admin.example.com",
                path: b"/x",
                query: Some(b"y")
            })
        );
        assert_eq!(
            parse_target(b"HTTPS://h", false).map(|t| t.path()),
            Ok(&b"/"[..])
        );
        assert_eq!(parse_target(b"*", true), Ok(Target::Asterisk));
        assert_eq!(parse_target(b"*", false), Err(TargetError::Asterisk));
        for bad in [
            &b"x:/admin"[..],
            b"admin",
            b"example.com:443",
            b"ftp://h/x",
            b"ws://h/x",
            b"http:/h/x",
            b"http://h\\evil/",
            b"",
        ] {
            assert_eq!(parse_target(bad, false), Err(TargetError::Form), "{bad:?}");
        }
    }

    #[test]
    fn hosts_normalize_once() {
        assert_eq!(host("example.com"), Ok("example.com".into()));
        assert_eq!(host("Admin.Example.COM."), Ok("admin.example.com".into()));
        assert_eq!(host("admin.example.com:80"), Ok("admin.example.com".into()));
        assert_eq!(host("admin.example.com:"), Ok("admin.example.com".into()));
        assert_eq!(host("a.example.com:8080"), Ok("a.example.com:8080".into()));
        assert_eq!(host("a.example.com:0080"), Ok("a.example.com".into()));
        assert_eq!(host("a:08080"), Ok("a:8080".into()));
        assert_eq!(host("10.0.0.1:81"), Ok("10.0.0.1:81".into()));
        assert_eq!(host("[::1]:80"), Ok("[::1]".into()));
        assert_eq!(host("[2001:DB8::1]"), Ok("[2001:db8::1]".into()));
        assert_eq!(
            normalize_host(b"a.example.com:443", 443).map(|h| h.rewritten),
            Ok(Some("a.example.com".into()))
        );
        assert_eq!(normalize_host(b"A.b:9", 80).map(|h| h.name_len), Ok(3));
    }

    #[test]
    fn bad_hosts_and_ports() {
        assert_eq!(host("admin.example.com:abc"), Err(TargetError::BadPort));
        assert_eq!(host("a:65536"), Err(TargetError::BadPort));
        assert_eq!(host("a:1:2"), Err(TargetError::BadPort));
        assert_eq!(host("a:-1"), Err(TargetError::BadPort));
        for bad in [
            "", ".", "a..b", ".a", "a b", "a/b", "a@b", "a%41", "[::1", "[zz]", "[::1]x",
        ] {
            assert_eq!(host(bad), Err(TargetError::BadHost), "{bad:?}");
        }
    }
}
