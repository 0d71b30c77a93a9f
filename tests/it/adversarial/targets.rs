//! Request targets and Host on raw sockets: non-origin-form targets, asterisk-form,
//! absolute-form against `Host`, and Host normalization in front of a host-deny route, over
//! HTTP/1 and HTTP/2 (h2c, frame client).
//!
//! Every site has a fixed-answer route `deny` on `host: admin.example.com` (403 `denied`) and
//! a catch-all proxy route to a [`RawOrigin`]. Each case asserts what the client got and what
//! the origin received: for a refusal or a denial, nothing at all.

use super::server_section;
use crate::harness::h2_frames::{code, frames, hpack, StreamOutcome};
use crate::harness::raw_http::RawResponse;
use crate::harness::{GatewayProcess, H2Client, RawConn, RawOrigin};
use std::io;
use std::time::Duration;

/// Bound on any single response.
const READ_LIMIT: Duration = Duration::from_secs(3);
/// Bound on the close that must follow a refusal.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// A gateway with the `deny` host route and a catch-all to `origin`, on an h2c listener
/// (which serves HTTP/1.1 too).
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
}

async fn site() -> Site {
    let origin = RawOrigin::start().await;
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
    h2c: true
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - {{ name: deny, match: {{ host: admin.example.com }}, respond: {{ status: 403, body: "denied" }} }}
  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    Site { gw, origin }
}

/// What one raw exchange produced.
struct Outcome {
    /// The first response, or why there was none.
    resp: io::Result<RawResponse>,
    /// Whether the gateway closed the connection after it (within [`CLOSE_LIMIT`]).
    closed: bool,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        self.resp.as_ref().ok().map(|r| r.status)
    }

    fn describe(&self) -> String {
        match &self.resp {
            Ok(r) => format!(
                "{:?} body {:?} (closed: {})",
                r.status_line,
                String::from_utf8_lossy(&r.body),
                self.closed
            ),
            Err(e) => format!("no response ({e}), closed: {}", self.closed),
        }
    }
}

impl Site {
    /// Sends `raw` on a fresh connection; reads one response; with `watch_close`, then waits
    /// for the gateway to close.
    async fn exchange(&self, raw: &str, watch_close: bool) -> Outcome {
        let mut conn = RawConn::connect(self.gw.addr).await;
        // The gateway may refuse and close before the client has finished writing.
        let _ = conn.send(raw.as_bytes()).await;
        let resp = conn.read_response(READ_LIMIT).await;
        let closed = if resp.is_err() {
            true
        } else if watch_close {
            conn.read_until_closed(CLOSE_LIMIT).await.1
        } else {
            false
        };
        Outcome { resp, closed }
    }

    /// `raw` is answered 400 and the connection closes; the origin gets nothing.
    async fn assert_refused(&self, what: &str, raw: &str) {
        let before = self.origin.count();
        let out = self.exchange(raw, true).await;
        assert_eq!(
            out.status(),
            Some(400),
            "{what}: {raw:?} got {}; origin: {}",
            out.describe(),
            self.origin.describe()
        );
        assert!(
            out.closed,
            "{what}: the connection stayed open after the 400"
        );
        assert_eq!(
            self.origin.count(),
            before,
            "{what}: a refused request reached the origin: {}",
            self.origin.describe()
        );
    }

    /// `raw` is answered by the `deny` route (403 `denied`); the origin gets nothing.
    async fn assert_denied(&self, what: &str, raw: &str) {
        let before = self.origin.count();
        let out = self.exchange(raw, false).await;
        let body = out
            .resp
            .as_ref()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .unwrap_or_default();
        assert!(
            out.status() == Some(403) && body == "denied",
            "{what}: {raw:?} got {}; origin: {}",
            out.describe(),
            self.origin.describe()
        );
        assert_eq!(
            self.origin.count(),
            before,
            "{what}: a denied request reached the origin: {}",
            self.origin.describe()
        );
    }

    /// `raw` reaches the origin as exactly one request, which is returned with the response.
    async fn assert_proxied(
        &self,
        what: &str,
        raw: &str,
    ) -> (RawResponse, crate::harness::raw_origin::SeenRequest) {
        let before = self.origin.count();
        let out = self.exchange(raw, false).await;
        let resp = match out.resp {
            Ok(r) if r.status == 200 => r,
            _ => panic!(
                "{what}: {raw:?} got {}; origin: {}",
                Outcome {
                    resp: out.resp,
                    closed: out.closed
                }
                .describe(),
                self.origin.describe()
            ),
        };
        let seen = self.origin.requests();
        assert_eq!(
            seen.len(),
            before + 1,
            "{what}: the origin did not get exactly one request: {}",
            self.origin.describe()
        );
        let req = seen[before].clone();
        assert_eq!(
            resp.header("x-origin-req"),
            Some(req.seq.to_string().as_str()),
            "{what}: the response is not the origin's answer to the request"
        );
        (resp, req)
    }

    /// A normal request on a new connection still reaches the origin.
    async fn assert_serving(&self, path: &str) {
        let (_, req) = self
            .assert_proxied(
                "a normal request afterwards",
                &format!("GET {path} HTTP/1.1\r\nHost: app.example.com\r\n\r\n"),
            )
            .await;
        assert_eq!(req.target, path);
    }

    async fn h2(&self) -> H2Client {
        let mut c = H2Client::connect_h2c(self.gw.addr)
            .await
            .expect("h2c connect");
        c.wait_settings(READ_LIMIT)
            .await
            .expect("the gateway's SETTINGS");
        c
    }

    /// Sends one HEADERS (END_STREAM) request block on a new h2c connection.
    async fn h2_request(&self, block: Vec<u8>) -> StreamOutcome {
        let mut c = self.h2().await;
        let id = c.next_stream_id();
        c.send(&frames::headers(id, &block, true, true))
            .await
            .expect("send HEADERS");
        c.read_stream(id, READ_LIMIT).await
    }
}

/// `GET {target} HTTP/1.1` with `Host: app.example.com`.
fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
}

/// `GET x:/admin`, `GET admin`, authority-form outside CONNECT and a non-HTTP scheme are
/// refused with 400 and a close; the origin sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_origin_form_targets_are_refused() {
    let site = site().await;
    for target in ["x:/admin", "admin", "example.com:443", "ftp://h/x"] {
        site.assert_refused(target, &get(target)).await;
        site.assert_serving(&format!("/after-{}", site.origin.count() + 1))
            .await;
    }
}

/// Asterisk-form is refused for every method but OPTIONS; `OPTIONS *` is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_form_is_for_options_only() {
    let site = site().await;
    for method in ["GET", "POST", "DELETE"] {
        site.assert_refused(
            &format!("{method} *"),
            &format!("{method} * HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 0\r\n\r\n"),
        )
        .await;
    }
    // Observed: `OPTIONS *` passes admission (no 400); its path `*` matches no route, not
    // even the catch-all `/` prefix, so the gateway answers it itself with 404 `no route` on a
    // connection that stays usable, and the origin never sees it.
    let before = site.origin.count();
    let out = site
        .exchange("OPTIONS * HTTP/1.1\r\nHost: app.example.com\r\n\r\n", false)
        .await;
    assert_eq!(out.status(), Some(404), "OPTIONS * got {}", out.describe());
    assert_eq!(
        site.origin.count(),
        before,
        "OPTIONS * reached the origin: {}",
        site.origin.describe()
    );
    site.assert_serving("/after-asterisk").await;
}

/// HTTP/1.1 without Host is refused; HTTP/1.0 without Host is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_on_http11_only() {
    let site = site().await;
    site.assert_refused("HTTP/1.1 without Host", "GET /nohost HTTP/1.1\r\n\r\n")
        .await;
    let (_, req) = site
        .assert_proxied("HTTP/1.0 without Host", "GET /http10 HTTP/1.0\r\n\r\n")
        .await;
    assert_eq!(req.target, "/http10");
    // It goes upstream as HTTP/1.1, which needs a Host: the backend's address stands in.
    assert_eq!(req.version, "HTTP/1.1");
    assert_eq!(
        req.header("host"),
        Some(site.origin.addr.to_string().as_str())
    );
}

/// Absolute-form is routed by its authority, must agree with Host, and reaches the origin in
/// origin-form with the authority as Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_by_its_authority() {
    let site = site().await;
    site.assert_denied(
        "absolute-form to the denied host",
        "GET http://admin.example.com/x HTTP/1.1\r\nHost: admin.example.com\r\n\r\n",
    )
    .await;
    site.assert_refused(
        "absolute-form whose Host disagrees",
        "GET http://admin.example.com/x HTTP/1.1\r\nHost: other.example\r\n\r\n",
    )
    .await;
    // The reverse must not sneak past the deny route either.
    site.assert_refused(
        "absolute-form to an allowed host with the denied Host",
        "GET http://app.example.com/x HTTP/1.1\r\nHost: admin.example.com\r\n\r\n",
    )
    .await;
    site.assert_denied(
        "absolute-form HTTP/1.0 without Host",
        "GET http://admin.example.com/x HTTP/1.0\r\n\r\n",
    )
    .await;
    let (_, req) = site
        .assert_proxied(
            "allowed absolute-form",
            "GET http://app.example.com/x?q=1 HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        )
        .await;
    assert_eq!(
        (
            req.method.as_str(),
            req.target.as_str(),
            req.version.as_str()
        ),
        ("GET", "/x?q=1", "HTTP/1.1"),
        "the origin must get origin-form, never the full URL"
    );
    assert_eq!(req.header_all("host"), vec!["app.example.com"]);
    assert!(
        !site.origin.raw_contains(b"http://"),
        "the full URL reached the origin: {:?}",
        String::from_utf8_lossy(&site.origin.all_raw())
    );
}

/// Trailing dot, case and the default port cannot get past a host route; malformed hosts
/// are refused; none of them reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_normalization_cannot_bypass_a_host_route() {
    let site = site().await;
    for host in [
        "admin.example.com.",
        "ADMIN.Example.COM",
        "admin.example.com:80",
        "Admin.Example.Com.:80",
    ] {
        site.assert_denied(
            &format!("Host: {host}"),
            &format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
    }
    for host in [
        "admin.example.com:abc",
        "admin.example.com:99999",
        "a..b",
        "bad host",
    ] {
        site.assert_refused(
            &format!("Host: {host}"),
            &format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .await;
    }
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    site.assert_serving("/after-hosts").await;
}

/// A proxied request carries the normalized host in Host and X-Forwarded-Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normalized_host_is_forwarded() {
    let site = site().await;
    let (_, req) = site
        .assert_proxied(
            "Host: App.Example.COM.:80",
            "GET /norm HTTP/1.1\r\nHost: App.Example.COM.:80\r\n\r\n",
        )
        .await;
    assert_eq!(req.target, "/norm");
    assert_eq!(req.header_all("host"), vec!["app.example.com"]);
    assert_eq!(req.header_all("x-forwarded-host"), vec!["app.example.com"]);
}

/// Whether an h2 stream was refused: a 400, or a stream reset (the h2 layer may refuse a
/// malformed request before the gateway sees it; RFC 9113 8.1.1 allows either answer).
fn h2_refused(out: &StreamOutcome) -> bool {
    out.status == Some(400) || (out.reset.is_some() && out.status.is_none())
}

/// HTTP/2 `:path` values that are not origin-form are refused (400 or reset), never routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_non_origin_paths_are_refused() {
    let site = site().await;
    for path in [
        "x:/admin",
        "admin",
        "example.com:443",
        "http://app.example.com",
    ] {
        let out = site
            .h2_request(hpack::request("GET", "http", "app.example.com", path, &[]))
            .await;
        assert!(h2_refused(&out), ":path {path:?}: {out:?}");
    }
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    // The frame client itself works: a well-formed request is proxied.
    let out = site
        .h2_request(hpack::request(
            "GET",
            "http",
            "app.example.com",
            "/h2-ok",
            &[],
        ))
        .await;
    assert_eq!(out.status, Some(200), "{out:?}");
    assert!(site.origin.saw_target_containing("/h2-ok"));
}

/// HTTP/2 `:authority` and `host` must name the same host; `:authority` is normalized for
/// routing like Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_authority_is_checked_and_normalized() {
    let site = site().await;
    for (authority, host) in [
        ("app.example.com", "admin.example.com"),
        ("admin.example.com", "app.example.com"),
    ] {
        let out = site
            .h2_request(hpack::request(
                "GET",
                "http",
                authority,
                "/mismatch",
                &[("host", host)],
            ))
            .await;
        assert!(
            h2_refused(&out),
            ":authority {authority} with host {host}: {out:?}"
        );
    }
    for authority in ["ADMIN.example.com.", "admin.example.com:80"] {
        let out = site
            .h2_request(hpack::request("GET", "http", authority, "/x", &[]))
            .await;
        assert_eq!(out.status, Some(403), ":authority {authority}: {out:?}");
        assert_eq!(out.body, b"denied", ":authority {authority}: {out:?}");
    }
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    // Pingora's h2 layer compares `host` with `:authority` byte for byte, so even two
    // spellings of one host (`App.Example.com.` and `app.example.com`) are refused: the safe
    // side of RFC 9113 8.3.1. Identical ones are proxied, with the normalized host.
    let out = site
        .h2_request(hpack::request(
            "GET",
            "http",
            "app.example.com",
            "/spelled",
            &[("host", "App.Example.com.")],
        ))
        .await;
    assert!(h2_refused(&out), "two spellings of one host: {out:?}");
    let out = site
        .h2_request(hpack::request(
            "GET",
            "http",
            "App.Example.COM.",
            "/agree",
            &[("host", "App.Example.COM.")],
        ))
        .await;
    assert_eq!(out.status, Some(200), "{out:?}");
    let seen = site.origin.requests();
    let req = seen
        .iter()
        .find(|r| r.target == "/agree")
        .unwrap_or_else(|| panic!("{}", site.origin.describe()));
    assert_eq!(req.header_all("host"), vec!["app.example.com"]);
}

/// Connection-specific fields and `te` other than `trailers` make an HTTP/2 request
/// malformed (RFC 9113 8.2.2): a stream error or a 400, never proxied; `te: trailers` is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connection_specific_headers_are_refused() {
    let site = site().await;
    for (name, value) in [
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "x"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
    ] {
        let out = site
            .h2_request(hpack::request(
                "GET",
                "http",
                "app.example.com",
                "/conn-specific",
                &[(name, value)],
            ))
            .await;
        let ok = out.status == Some(400)
            || (out.status.is_none() && out.reset == Some(code::PROTOCOL_ERROR));
        assert!(ok, "{name}: {value}: {out:?}");
    }
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    let out = site
        .h2_request(hpack::request(
            "GET",
            "http",
            "app.example.com",
            "/te-trailers",
            &[("te", "trailers")],
        ))
        .await;
    assert_eq!(out.status, Some(200), "te: trailers: {out:?}");
    assert!(
        site.origin.saw_target_containing("/te-trailers"),
        "{}",
        site.origin.describe()
    );
}

/// `CONNECT` gets Pingora's `405` with an empty body, over HTTP/1 (authority-form or not,
/// HTTP/1.1 or 1.0, with a body) and HTTP/2; over HTTP/1 the connection is closed, so a
/// request pipelined behind it is never read; nothing reaches the origin and no tunnel opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gets_405_and_never_a_tunnel() {
    let site = site().await;
    for raw in [
        "CONNECT app.example.com:443 HTTP/1.1\r\nHost: app.example.com:443\r\n\r\n",
        "CONNECT admin.example.com:443 HTTP/1.1\r\nHost: admin.example.com:443\r\n\r\n",
        "CONNECT /x HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
        "CONNECT app.example.com:443 HTTP/1.0\r\n\r\n",
        // A body, then a pipelined request: after the close neither is read.
        "CONNECT app.example.com:80 HTTP/1.1\r\nHost: app.example.com:80\r\n\
         Content-Length: 5\r\n\r\nhello\
         GET /after-connect HTTP/1.1\r\nHost: app.example.com\r\n\r\n",
    ] {
        let mut conn = RawConn::connect(site.gw.addr).await;
        let _ = conn.send(raw.as_bytes()).await;
        let resp = conn.read_response(READ_LIMIT).await;
        let out = match resp {
            Ok(r) => r,
            Err(e) => panic!(
                "{raw:?}: no response ({e}); origin: {}",
                site.origin.describe()
            ),
        };
        assert_eq!(
            (
                out.status,
                out.body.as_slice(),
                out.header("content-length")
            ),
            (405, &b""[..], Some("0")),
            "{raw:?}: {:?} {:?}",
            out.status_line,
            out.headers
        );
        let (rest, closed) = conn.read_until_closed(CLOSE_LIMIT).await;
        assert!(closed, "{raw:?}: the connection stayed open after the 405");
        assert!(
            rest.is_empty(),
            "{raw:?}: more bytes after the 405: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(
            site.origin.connections(),
            0,
            "{raw:?}: the gateway connected to the origin: {}",
            site.origin.describe()
        );
    }
    let out = site
        .h2_request(hpack::block(&[
            (":method", "CONNECT"),
            (":authority", "app.example.com:443"),
        ]))
        .await;
    assert_eq!(
        (out.status, out.body.as_slice()),
        (Some(405), &b""[..]),
        "h2 CONNECT: {out:?}"
    );
    assert_eq!(site.origin.connections(), 0, "{}", site.origin.describe());
    site.assert_serving("/after-connect-check").await;
}

/// An HTTP/2 request with neither `:authority` nor `host` gets `400` and is never proxied;
/// with `host` alone, `host` is the request's host (routed and normalized like one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_without_authority_or_host_gets_400() {
    let site = site().await;
    for path in ["/no-authority", "/"] {
        let out = site
            .h2_request(hpack::block(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", path),
            ]))
            .await;
        assert_eq!(
            out.status,
            Some(400),
            ":path {path} without a host: {out:?}"
        );
        assert!(out.ended, ":path {path}: the stream did not end: {out:?}");
    }
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    let out = site
        .h2_request(hpack::block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/host-only"),
            ("host", "ADMIN.example.com."),
        ]))
        .await;
    assert_eq!(
        (out.status, out.body.as_slice()),
        (Some(403), &b"denied"[..]),
        "host alone, the denied host: {out:?}"
    );
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    let out = site
        .h2_request(hpack::block(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/host-only"),
            ("host", "App.Example.com"),
        ]))
        .await;
    assert_eq!(out.status, Some(200), "host alone: {out:?}");
    let seen = site.origin.requests();
    assert_eq!(seen.len(), 1, "{}", site.origin.describe());
    assert_eq!(seen[0].target, "/host-only");
    assert_eq!(seen[0].header_all("host"), vec!["app.example.com"]);
}
