//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): strict parsing of incoming
//! `traceparent` and `tracestate`, and rendering of the ones sent upstream.
//!
//! Anything that does not parse exactly is ignored, never an error: the request then starts a
//! new trace, and its `tracestate` (which belongs to the rejected parent) is dropped too.

use http::header::HeaderMap;
use http::HeaderValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// `traceparent`, as read and written.
pub static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
/// `tracestate`, as read and written.
pub static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `00-` 32 hex `-` 16 hex `-` 2 hex.
const TRACEPARENT_LEN: usize = 55;
/// Most list members a `tracestate` may carry.
const MAX_STATE_MEMBERS: usize = 32;
/// Longest combined `tracestate` kept; a longer one is dropped whole (the spec allows
/// vendors to cut at 512 characters).
const MAX_STATE_LEN: usize = 512;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span id (never all zeros).
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// The remote parent of a request: its valid `traceparent` and (valid) `tracestate`.
pub fn extract(headers: &HeaderMap) -> Option<SpanContext> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        // Two traceparent fields cannot both be the parent: neither is trusted.
        return None;
    }
    let parent = parse_traceparent(first.as_bytes())?;
    let state = parse_tracestate(headers.get_all(&TRACESTATE).iter().map(|v| v.as_bytes()))
        .unwrap_or_default();
    Some(SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.parent_id),
        // Only `sampled` is defined; unknown bits are not passed on.
        TraceFlags::new(parent.flags & 1),
        true,
        state,
    ))
}

/// Parses a `traceparent` value; `None` unless it is valid.
///
/// Version 00 must be exactly 55 characters; a later version may be longer, but only after
/// a `-`, and only its first four fields are read. Version `ff` is invalid, hex is lowercase,
/// and neither id may be all zeros.
pub fn parse_traceparent(v: &[u8]) -> Option<TraceParent> {
    if v.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_byte(v[0], v[1])?;
    if version == 0xff {
        return None;
    }
    if version == 0 && v.len() != TRACEPARENT_LEN {
        return None;
    }
    if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex_into(&v[3..35], &mut trace_id)?;
    let mut parent_id = [0u8; 8];
    hex_into(&v[36..52], &mut parent_id)?;
    let flags = hex_byte(v[53], v[54])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
    })
}

/// Parses the `tracestate` field lines (joined as one comma-separated list); `None` when any
/// member is invalid, a key repeats, or the list is too long. Empty members are allowed.
pub fn parse_tracestate<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Option<TraceState> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    let mut total = 0usize;
    for line in lines {
        total += line.len() + 1;
        if total > MAX_STATE_LEN + 1 {
            return None;
        }
        let line = std::str::from_utf8(line).ok()?;
        for member in line.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member.split_once('=')?;
            if !valid_key(key) || !valid_value(value) || members.iter().any(|(k, _)| *k == key) {
                return None;
            }
            members.push((key, value));
            if members.len() > MAX_STATE_MEMBERS {
                return None;
            }
        }
    }
    if members.is_empty() {
        return None;
    }
    TraceState::from_key_value(members).ok()
}

/// `key = simple-key / multi-tenant-key`: `lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" /
/// "/")`, or `tenant@system` with a tenant of up to 241 and a system of up to 14 characters.
fn valid_key(key: &str) -> bool {
    let ok_char = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/');
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            (1..=256).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| ok_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (1..=14).contains(&s.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && s[0].is_ascii_lowercase()
                && t.iter().all(|&c| ok_char(c))
                && s.iter().all(|&c| ok_char(c))
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, where `chr` is printable ASCII except `,` and `=`, and the
/// last one is not a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter()
            .all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && b[b.len() - 1] != b' '
}

/// `00-{trace id}-{span id}-{flags}` for a span context.
pub fn traceparent(sc: &SpanContext) -> HeaderValue {
    let mut buf = [0u8; TRACEPARENT_LEN];
    buf[..3].copy_from_slice(b"00-");
    hex_out(&sc.trace_id().to_bytes(), &mut buf[3..35]);
    buf[35] = b'-';
    hex_out(&sc.span_id().to_bytes(), &mut buf[36..52]);
    buf[52] = b'-';
    hex_out(&[sc.trace_flags().to_u8() & 1], &mut buf[53..55]);
    // Only lowercase hex and dashes: always a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The trace id in lowercase hex, as logged and sent.
pub fn trace_id_hex(id: TraceId) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex_out(&id.to_bytes(), &mut out);
    out
}

fn hex_out(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[(b >> 4) as usize];
        out[2 * i + 1] = DIGITS[(b & 0xf) as usize];
    }
}

fn hex_into(src: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, pair) in src.chunks_exact(2).enumerate() {
        out[i] = hex_byte(pair[0], pair[1])?;
    }
    Some(())
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    Some(hex_digit(hi)? << 4 | hex_digit(lo)?)
}

/// A lowercase hex digit (the spec forbids uppercase).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let p = parse_traceparent(GOOD.as_bytes()).unwrap();
        assert_eq!(p.flags, 1);
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.parent_id[7], 0xb7);
    }

    #[test]
    fn rejects_malformed_traceparents() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        assert!(parse_traceparent(v.as_bytes()).is_some());
    }

    #[test]
    fn two_traceparents_are_no_parent() {
        let mut h = HeaderMap::new();
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(extract(&h).is_some());
        h.append(&TRACEPARENT, HeaderValue::from_static(GOOD));
        assert!(extract(&h).is_none());
    }

    #[test]
    fn tracestate_rules() {
        let ok = |s: &str| parse_tracestate(std::iter::once(s.as_bytes()));
        let st = ok("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,, tenant@vendor=x").unwrap();
        assert_eq!(st.get("rojo"), Some("00f067aa0ba902b7"));
        assert_eq!(st.get("tenant@vendor"), Some("x"));
        for bad in [
            "Congo=1", "a=1,a=2", "a", "a=", "a=b,c", "a=x\ty", "1a=1", "a=b=c",
        ] {
            assert!(ok(bad).is_none(), "{bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(ok(&many.join(",")).is_none());
        let two = [b"a=1".as_slice(), b"b=2".as_slice()];
        assert_eq!(
            parse_tracestate(two.into_iter()).unwrap().header(),
            "a=1,b=2"
        );
    }

    #[test]
    fn invalid_tracestate_keeps_the_parent() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(&TRACESTATE, HeaderValue::from_static("BAD=1"));
        let sc = extract(&h).unwrap();
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().header(), "");
    }

    #[test]
    fn renders_what_it_parses() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GOOD));
        let sc = extract(&h).unwrap();
        assert_eq!(traceparent(&sc), GOOD);
        assert_eq!(
            &trace_id_hex(sc.trace_id()),
            b"4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
