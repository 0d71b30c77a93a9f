//! Rendering one access log line: NGINX `combined` (plus request id and duration) or JSON.
//!
//! Rendering runs on the worker, into a fresh `String` that is then handed to the writer
//! thread, so it is plain appends with no I/O. Everything taken from the client is escaped:
//! JSON string escaping, and NGINX's `\xHH` escaping inside the combined format's quotes.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One finished request, as the access log sees it. Borrowed from the request's state.
#[derive(Debug, Clone)]
pub struct LogEntry<'a> {
    /// When the request finished.
    pub time: SystemTime,
    /// The request id (`X-Request-Id`).
    pub request_id: Option<&'a [u8]>,
    /// The client IP (the peer, or from `X-Forwarded-For` behind trusted proxies).
    pub client_ip: Option<IpAddr>,
    /// The request method.
    pub method: &'a str,
    /// The Host header (or the URI's authority).
    pub host: Option<&'a [u8]>,
    /// The request target as received: path and query.
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`...
    pub protocol: &'a str,
    /// Status sent downstream; 0 when none was sent (client gone).
    pub status: u16,
    /// Response body bytes sent downstream.
    pub bytes: usize,
    /// Time from the request header to the end of the response.
    pub duration: Duration,
    /// The matched route's name.
    pub route: Option<&'a str>,
    /// The upstream's name.
    pub upstream: Option<&'a str>,
    /// The backend address last tried.
    pub upstream_addr: Option<SocketAddr>,
    /// From the first connect attempt to the upstream's response header.
    pub upstream_duration: Option<Duration>,
    /// The response cache's verdict (`hit`, `miss`, `stale`...), when the cache was used.
    pub cache_status: Option<&'a str>,
    /// The gateway's own decision (`rate_limited`, `circuit_open`...), if it made one.
    pub decision: Option<&'a str>,
    /// The authenticated consumer, once a plugin established one.
    pub consumer: Option<&'a str>,
    /// The Referer header.
    pub referer: Option<&'a [u8]>,
    /// The User-Agent header.
    pub user_agent: Option<&'a [u8]>,
    /// The trace id (32 lowercase hex digits), when tracing is on.
    pub trace_id: Option<&'a str>,
}

/// Appends `e` as one JSON object and a newline.
pub fn json(out: &mut String, e: &LogEntry<'_>) {
    out.push_str("{\"time\":\"");
    rfc3339(out, e.time);
    out.push_str("\",\"request_id\":");
    json_opt(out, e.request_id);
    out.push_str(",\"client_ip\":");
    match e.client_ip {
        Some(ip) => {
            let _ = write!(out, "\"{ip}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"method\":");
    json_str(out, e.method.as_bytes());
    out.push_str(",\"host\":");
    json_opt(out, e.host);
    out.push_str(",\"path\":");
    json_str(out, e.path.as_bytes());
    out.push_str(",\"protocol\":");
    json_str(out, e.protocol.as_bytes());
    let _ = write!(out, ",\"status\":{},\"bytes\":{}", e.status, e.bytes);
    out.push_str(",\"duration_ms\":");
    millis(out, e.duration);
    out.push_str(",\"route\":");
    json_opt(out, e.route.map(str::as_bytes));
    out.push_str(",\"upstream\":");
    json_opt(out, e.upstream.map(str::as_bytes));
    out.push_str(",\"upstream_addr\":");
    match e.upstream_addr {
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"upstream_duration_ms\":");
    match e.upstream_duration {
        Some(d) => millis(out, d),
        None => out.push_str("null"),
    }
    out.push_str(",\"cache_status\":");
    json_opt(out, e.cache_status.map(str::as_bytes));
    out.push_str(",\"decision\":");
    json_opt(out, e.decision.map(str::as_bytes));
    out.push_str(",\"consumer\":");
    json_opt(out, e.consumer.map(str::as_bytes));
    out.push_str(",\"referer\":");
    json_opt(out, e.referer);
    out.push_str(",\"user_agent\":");
    json_opt(out, e.user_agent);
    out.push_str(",\"trace_id\":");
    json_opt(out, e.trace_id.map(str::as_bytes));
    out.push_str("}\n");
}

/// Appends `e` in NGINX's `combined` format followed by `"request_id" duration_seconds`.
///
/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
/// "$http_referer" "$http_user_agent" "$request_id" $request_time`
pub fn combined(out: &mut String, e: &LogEntry<'_>) {
    match e.client_ip {
        Some(ip) => {
            let _ = write!(out, "{ip}");
        }
        None => out.push('-'),
    }
    out.push_str(" - ");
    // `$remote_user`: the consumer; a space would split the field, so it is escaped too.
    match e.consumer {
        Some(c) if !c.is_empty() => {
            for part in c.as_bytes().split(|&b| b == b' ').enumerate() {
                if part.0 > 0 {
                    out.push_str("\\x20");
                }
                clf_escape(out, part.1);
            }
        }
        _ => out.push('-'),
    }
    out.push_str(" [");
    clf_time(out, e.time);
    out.push_str("] \"");
    clf_escape(out, e.method.as_bytes());
    out.push(' ');
    clf_escape(out, e.path.as_bytes());
    out.push(' ');
    clf_escape(out, e.protocol.as_bytes());
    let _ = write!(out, "\" {} {} \"", e.status, e.bytes);
    clf_opt(out, e.referer);
    out.push_str("\" \"");
    clf_opt(out, e.user_agent);
    out.push_str("\" \"");
    clf_opt(out, e.request_id);
    out.push_str("\" ");
    let ms = e.duration.as_millis();
    let _ = write!(out, "{}.", ms / 1000);
    digits(out, (ms % 1000) as u32, 3);
    if let Some(id) = e.trace_id {
        // Only with tracing on, so lines keep NGINX's shape (plus two fields) without it.
        out.push_str(" \"");
        clf_escape(out, id.as_bytes());
        out.push('"');
    }
    out.push('\n');
}

/// Milliseconds with microsecond precision: `12.345`.
fn millis(out: &mut String, d: Duration) {
    let us = d.as_micros();
    let _ = write!(out, "{}.", us / 1000);
    digits(out, (us % 1000) as u32, 3);
}

fn json_opt(out: &mut String, v: Option<&[u8]>) {
    match v {
        Some(v) => json_str(out, v),
        None => out.push_str("null"),
    }
}

/// A JSON string: quotes, backslashes and control characters escaped; bytes that are not
/// UTF-8 (allowed in header values) become U+FFFD.
fn json_str(out: &mut String, v: &[u8]) {
    out.push('"');
    // Nearly every value is plain printable ASCII: copy it in one go.
    if let Some(plain) = plain_ascii(v) {
        out.push_str(plain);
        out.push('"');
        return;
    }
    for c in String::from_utf8_lossy(v).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn clf_opt(out: &mut String, v: Option<&[u8]>) {
    match v {
        Some(v) if !v.is_empty() => clf_escape(out, v),
        _ => out.push('-'),
    }
}

/// NGINX's default log escaping: `"`, `\`, control and non-ASCII bytes become `\xHH`, so a
/// field can never close its quotes or forge a new line.
fn clf_escape(out: &mut String, v: &[u8]) {
    if let Some(plain) = plain_ascii(v) {
        out.push_str(plain);
        return;
    }
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b as char);
        }
    }
}

/// `v` as a `str` when no byte needs escaping in either format (printable ASCII, no `"` or `\`).
fn plain_ascii(v: &[u8]) -> Option<&str> {
    let plain = v
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    // All bytes are ASCII, so this cannot fail.
    plain.then(|| std::str::from_utf8(v).ok()).flatten()
}

/// Splits a time into UTC (year, month, day, hour, minute, second, millisecond).
fn utc(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis(),
    )
}

/// `2024-05-01T12:34:56.789Z`
fn rfc3339(out: &mut String, t: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = utc(t);
    digits(out, y.clamp(0, 9999) as u32, 4);
    out.push('-');
    digits(out, mo, 2);
    out.push('-');
    digits(out, d, 2);
    out.push('T');
    digits(out, h, 2);
    out.push(':');
    digits(out, mi, 2);
    out.push(':');
    digits(out, s, 2);
    out.push('.');
    digits(out, ms, 3);
    out.push('Z');
}

/// `01/May/2024:12:34:56 +0000`
fn clf_time(out: &mut String, t: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = utc(t);
    digits(out, d, 2);
    out.push('/');
    out.push_str(MONTHS[(mo as usize).clamp(1, 12) - 1]);
    out.push('/');
    digits(out, y.clamp(0, 9999) as u32, 4);
    out.push(':');
    digits(out, h, 2);
    out.push(':');
    digits(out, mi, 2);
    out.push(':');
    digits(out, s, 2);
    out.push_str(" +0000");
}

/// Appends the last `width` decimal digits of `n`, zero-padded (cheaper than `write!`).
fn digits(out: &mut String, n: u32, width: u32) {
    for i in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(i) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LogEntry<'static> {
        LogEntry {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: Some(b"abc-1"),
            client_ip: Some("10.1.2.3".parse().unwrap()),
            method: "GET",
            host: Some(b"example.com"),
            path: "/a/b?q=1",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 42,
            duration: Duration::from_micros(12_300),
            route: Some("api"),
            upstream: Some("pool"),
            upstream_addr: Some("127.0.0.1:8080".parse().unwrap()),
            upstream_duration: Some(Duration::from_micros(1_250)),
            cache_status: None,
            decision: None,
            consumer: None,
            referer: None,
            user_agent: Some(b"curl/8 \"quoted\"\n\\"),
            trace_id: None,
        }
    }

    #[test]
    fn dates() {
        let mut s = String::new();
        rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400));
        assert_eq!(s, "2000-02-29T00:00:00.000Z");
        s.clear();
        clf_time(&mut s, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(s, "14/Nov/2023:22:13:20 +0000");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH + Duration::from_secs(4_107_542_399));
        assert_eq!(s, "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn json_line_parses_and_escapes() {
        let mut s = String::new();
        json(&mut s, &entry());
        assert!(s.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["request_id"], "abc-1");
        assert_eq!(v["client_ip"], "10.1.2.3");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["path"], "/a/b?q=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 42);
        assert_eq!(v["duration_ms"], 12.3);
        assert_eq!(v["upstream"], "pool");
        assert_eq!(v["upstream_addr"], "127.0.0.1:8080");
        assert_eq!(v["upstream_duration_ms"], 1.25);
        assert!(v["cache_status"].is_null());
        assert!(v["decision"].is_null());
        assert_eq!(v["route"], "api");
        assert_eq!(v["user_agent"], "curl/8 \"quoted\"\n\\");
        let mut bad = entry();
        bad.host = Some(b"h\xff\x01");
        s.clear();
        json(&mut s, &bad);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["host"], "h\u{fffd}\u{1}");
    }

    #[test]
    fn combined_line_escapes_quotes() {
        let mut s = String::new();
        combined(&mut s, &entry());
        assert_eq!(
            s,
            "10.1.2.3 - - [14/Nov/2023:22:13:20 +0000] \"GET /a/b?q=1 HTTP/1.1\" 200 42 \"-\" \
             \"curl/8 \\x22quoted\\x22\\x0A\\x5C\" \"abc-1\" 0.012\n"
        );
    }

    #[test]
    fn the_consumer_is_remote_user_and_a_json_field() {
        let mut e = entry();
        e.consumer = Some("alice smith\"");
        let mut s = String::new();
        combined(&mut s, &e);
        assert!(
            s.starts_with("10.1.2.3 - alice\\x20smith\\x22 [14/Nov"),
            "{s}"
        );
        s.clear();
        json(&mut s, &e);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["consumer"], "alice smith\"");
    }

    #[test]
    fn the_trace_id_is_a_json_field_and_ends_combined_lines_when_tracing_is_on() {
        let mut e = entry();
        e.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736");
        let mut s = String::new();
        combined(&mut s, &e);
        assert!(
            s.ends_with(" 0.012 \"4bf92f3577b34da6a3ce929d0e0e4736\"\n"),
            "{s}"
        );
        s.clear();
        json(&mut s, &e);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        s.clear();
        json(&mut s, &entry());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert!(v["trace_id"].is_null(), "like every absent field: {s}");
    }
}
