//! Which client-sent headers the gateway believes: forwarding headers from an untrusted peer
//! (no `trusted_proxies`) and from a trusted one, `X-Request-Id` sanity, and rate-limit keys
//! of IPv6 clients named by a trusted proxy.
//!
//! Every request goes on a raw socket to a gateway in front of a [`RawOrigin`], and every
//! case asserts the exact header lines the origin received.

use super::server_section;
use crate::harness::raw_http::RawResponse;
use crate::harness::raw_origin::SeenRequest;
use crate::harness::{GatewayProcess, RawConn, RawOrigin};
use std::time::Duration;

/// Bound on any single response.
const READ_LIMIT: Duration = Duration::from_secs(3);

/// The headers an untrusted peer may not assert, with a value each: none may reach the
/// origin as sent.
const SPOOFED: [(&str, &str); 9] = [
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "8443"),
    ("Forwarded", "for=6.6.6.6;host=evil.example;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Host", "evil.example"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
];

/// A gateway with `top` (top-level YAML keys, each line ending in a newline) and one
/// catch-all route to a fresh origin; `route_extra` are more route lines.
async fn site(top: &str, route_extra: &str) -> (GatewayProcess, RawOrigin) {
    let origin = RawOrigin::start().await;
    let gw = GatewayProcess::start(&format!(
        r#"{server}{top}listeners:
  - address: {{listen}}
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
{route_extra}  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    (gw, origin)
}

/// Sends `GET path` with `Host: site.test` and `headers` on a fresh connection; returns the
/// response and, when the origin answered it, the request the origin received.
async fn get(
    gw: &GatewayProcess,
    origin: &RawOrigin,
    path: &str,
    headers: &[(&str, &str)],
) -> (RawResponse, Option<SeenRequest>) {
    let mut raw = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(raw.as_bytes()).await.expect("send request");
    let resp = conn
        .read_response(READ_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}; origin: {}", origin.describe()));
    let seen = resp
        .header("x-origin-req")
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| origin.requests().into_iter().find(|r| r.seq == n));
    (resp, seen)
}

/// Like [`get`], for a request that must be proxied.
async fn proxied(
    gw: &GatewayProcess,
    origin: &RawOrigin,
    path: &str,
    headers: &[(&str, &str)],
) -> (RawResponse, SeenRequest) {
    let (resp, seen) = get(gw, origin, path, headers).await;
    assert_eq!(resp.status, 200, "GET {path}: {:?}", resp.status_line);
    let seen = seen.unwrap_or_else(|| panic!("GET {path}: not answered by the origin"));
    assert_eq!(seen.target, path);
    (resp, seen)
}

/// From an untrusted peer, `X-Forwarded-For` is replaced by the peer address alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_xff_is_replaced() {
    let (gw, origin) = site("", "").await;
    let (_, req) = proxied(&gw, &origin, "/xff", &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(req.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
    // Two lines, and a line that is not an address at all: still the peer alone.
    let (_, req) = proxied(
        &gw,
        &origin,
        "/xff2",
        &[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-For", "not-an-ip, 5.6.7.8"),
        ],
    )
    .await;
    assert_eq!(req.header_all("x-forwarded-for"), vec!["127.0.0.1"]);
}

/// `forwarded_for: append` keeps the client's lines before the peer (NGINX's behaviour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_append_keeps_the_client_lines() {
    let (gw, origin) = site("forwarded_for: append\n", "").await;
    let (_, req) = proxied(&gw, &origin, "/xff", &[("X-Forwarded-For", "1.2.3.4")]).await;
    assert_eq!(
        req.header_all("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"]
    );
    // Appending is not trusting: the other forwarding headers are still the gateway's.
    let (_, req) = proxied(&gw, &origin, "/spoof", &SPOOFED).await;
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(req.header_all("x-forwarded-host"), vec!["site.test"]);
    assert!(req.header("forwarded").is_none(), "{:?}", req.headers);
}

/// From an untrusted peer, X-Forwarded-Proto/Host/Port are the gateway's own values and the
/// other forwarding and rewrite headers never reach the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_forwarding_headers_are_the_gateways() {
    let (gw, origin) = site("", "").await;
    let (_, req) = proxied(&gw, &origin, "/spoof", &SPOOFED).await;
    let port = gw.addr.port().to_string();
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["http"]);
    assert_eq!(req.header_all("x-forwarded-host"), vec!["site.test"]);
    assert_eq!(req.header_all("x-forwarded-port"), vec![port.as_str()]);
    for name in [
        "forwarded",
        "x-real-ip",
        "x-forwarded-scheme",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(
            req.header(name).is_none(),
            "{name} reached the origin: {:?}",
            req.headers
        );
    }
    for (_, value) in SPOOFED {
        if value == "https" {
            continue; // `http` is the gateway's own; `https` must not appear anywhere
        }
        assert!(
            !origin.raw_contains(value.as_bytes()),
            "{value:?} reached the origin: {:?}",
            String::from_utf8_lossy(&origin.all_raw())
        );
    }
    assert!(!origin.raw_contains(b"https"));
    // Any case of the names is the same header.
    let (_, req) = proxied(
        &gw,
        &origin,
        "/spoof-case",
        &[
            ("x-FORWARDED-host", "evil.example"),
            ("X-REAL-ip", "6.6.6.6"),
        ],
    )
    .await;
    assert_eq!(req.header_all("x-forwarded-host"), vec!["site.test"]);
    assert!(req.header("x-real-ip").is_none());
}

/// Behind `trusted_proxies`, the proxy's X-Forwarded-* are kept and X-Forwarded-For is
/// appended to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_headers_are_kept() {
    let (gw, origin) = site("trusted_proxies: [127.0.0.1]\n", "").await;
    let (_, req) = proxied(
        &gw,
        &origin,
        "/trusted",
        &[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
            ("X-Forwarded-Port", "443"),
        ],
    )
    .await;
    assert_eq!(
        req.header_all("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(req.header_all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(req.header_all("x-forwarded-host"), vec!["public.example"]);
    assert_eq!(req.header_all("x-forwarded-port"), vec!["443"]);
}

/// Whether `id` looks like one the gateway generated: at least 32 characters of hex digits
/// and `-`.
fn is_generated(id: &str) -> bool {
    id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A sane `X-Request-Id` is kept end to end; anything that could break a log line or a
/// header parser is replaced by a generated one (the same on both sides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_kept_only_when_sane() {
    let (gw, origin) = site("", "").await;
    let good = "abc-123_x.y:z";
    let (resp, req) = proxied(&gw, &origin, "/id-good", &[("X-Request-Id", good)]).await;
    assert_eq!(req.header_all("x-request-id"), vec![good]);
    assert_eq!(resp.header("x-request-id"), Some(good));
    let at_limit = "a".repeat(128);
    let (resp, req) = proxied(&gw, &origin, "/id-128", &[("X-Request-Id", &at_limit)]).await;
    assert_eq!(req.header_all("x-request-id"), vec![at_limit.as_str()]);
    assert_eq!(resp.header("x-request-id"), Some(at_limit.as_str()));

    let too_long = "a".repeat(129);
    for (n, bad) in [too_long.as_str(), "a b", "a,b", "a%0d", "a\"b", "<script>"]
        .into_iter()
        .enumerate()
    {
        let path = format!("/id-bad-{n}");
        let (resp, req) = proxied(&gw, &origin, &path, &[("X-Request-Id", bad)]).await;
        let upstream = req.header_all("x-request-id");
        assert_eq!(upstream.len(), 1, "{bad:?}: {:?}", req.headers);
        assert_ne!(upstream[0], bad, "{bad:?} was forwarded");
        assert!(
            is_generated(upstream[0]),
            "{bad:?} became {:?}",
            upstream[0]
        );
        assert_eq!(
            resp.header("x-request-id"),
            Some(upstream[0]),
            "{bad:?}: the client and the origin saw different ids"
        );
    }
    // Without one, a fresh id is generated for each request.
    let (_, a) = proxied(&gw, &origin, "/id-none-a", &[]).await;
    let (_, b) = proxied(&gw, &origin, "/id-none-b", &[]).await;
    let (a, b) = (a.header("x-request-id"), b.header("x-request-id"));
    assert!(a.is_some_and(is_generated) && b.is_some_and(is_generated) && a != b);
}

/// `client_ip` rate limits key IPv6 clients by their /64 by default and by the whole address
/// with `ipv6_prefix: 128`. The client addresses are named by a trusted proxy (127.0.0.1) in
/// `X-Forwarded-For`, because a loopback test cannot connect from two IPv6 addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_bucket_per_prefix() {
    let routes = "  - name: per64
    match: { path_prefix: /per64 }
    upstream: origin
    rate_limit: { requests_per_second: 1, burst: 0, key: client_ip }
  - name: per128
    match: { path_prefix: /per128 }
    upstream: origin
    rate_limit: { requests_per_second: 1, burst: 0, key: client_ip, ipv6_prefix: 128 }
";
    let (gw, origin) = site("trusted_proxies: [127.0.0.1]\n", routes).await;
    let status = |path: &'static str, xff: &'static str| {
        let (gw, origin) = (&gw, &origin);
        async move {
            let (resp, _) = get(gw, origin, path, &[("X-Forwarded-For", xff)]).await;
            resp.status
        }
    };
    // One request per second per bucket, no burst: the second request of a bucket within a
    // second is refused (loopback round trips take milliseconds).
    assert_eq!(status("/per64", "2001:db8::1").await, 200);
    assert_eq!(
        status("/per64", "2001:db8::2").await,
        429,
        "another address in the same /64 must share the bucket"
    );
    assert_eq!(
        status("/per64", "2001:db8:0:1::1").await,
        200,
        "another /64 has its own bucket"
    );
    assert_eq!(status("/per128", "2001:db8::1").await, 200);
    assert_eq!(
        status("/per128", "2001:db8::2").await,
        200,
        "with ipv6_prefix: 128 every address has its own bucket"
    );
    assert_eq!(status("/per128", "2001:db8::2").await, 429);
    let admitted: Vec<String> = origin
        .targets()
        .into_iter()
        .filter(|t| t.contains("/per"))
        .collect();
    assert_eq!(
        admitted.len(),
        4,
        "only the admitted requests reach the origin: {admitted:?}"
    );
}
