//! Malformed, oversized, ambiguous and slow requests written byte by byte on raw sockets.
//! Each is refused (or cut off) and the gateway keeps serving normal requests afterwards.

use crate::harness::raw_http::get_request;
use crate::harness::{GatewayProcess, RawConn, TestUpstream};
use std::time::{Duration, Instant};

const READ_LIMIT: Duration = Duration::from_secs(5);

/// `/api/` goes to `api`, `/smuggled` to `smuggled` (which no request should ever reach).
struct Setup {
    gw: GatewayProcess,
    api: TestUpstream,
    smuggled: TestUpstream,
}

async fn setup() -> Setup {
    let api = TestUpstream::start("api").await;
    let smuggled = TestUpstream::start("smuggled").await;
    let gw = GatewayProcess::start(&format!(
        r#"
server:
  workers: 2
  pid_file: {{dir}}/gw.pid
  upgrade_sock: {{dir}}/upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  header_read_timeout_ms: 500
listeners:
  - address: {{listen}}
upstreams:
  api:
    servers: [{{ address: {} }}]
  smuggled:
    servers: [{{ address: {} }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: api
  - name: smuggled
    match: {{ path_prefix: /smuggled }}
    upstream: smuggled
"#,
        api.addr, smuggled.addr
    ));
    Setup { gw, api, smuggled }
}

impl Setup {
    /// The gateway is alive and a well-formed request on a fresh connection is proxied.
    async fn assert_still_serving(&mut self) {
        assert!(self.gw.is_running(), "gateway died:\n{}", self.gw.log());
        let before = self.api.hits();
        let mut conn = RawConn::connect(self.gw.addr).await;
        conn.send(get_request("/api/after").as_bytes())
            .await
            .expect("send a normal request");
        let resp = conn
            .read_response(READ_LIMIT)
            .await
            .expect("a normal request is answered");
        assert_eq!(resp.status, 200, "normal request after a bad one");
        assert_eq!(resp.header("x-upstream"), Some("api"));
        assert_eq!(self.api.hits(), before + 1);
    }
}

/// Sends `raw` on a new connection and reads one response. A write error is tolerated: the
/// gateway may refuse and close before the client has finished writing.
async fn exchange(gw: &GatewayProcess, raw: &[u8]) -> (u16, String) {
    let mut conn = RawConn::connect(gw.addr).await;
    let _ = conn.send(raw).await;
    let resp = conn
        .read_response(READ_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", preview(raw)));
    (resp.status, resp.status_line)
}

fn preview(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(&raw[..raw.len().min(80)]).into_owned();
    if raw.len() > 80 {
        format!("{s}... ({} bytes)", raw.len())
    } else {
        s
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_get_400() {
    let mut s = setup().await;
    let cases: &[&[u8]] = &[
        b"this is not http at all\r\n\r\n",
        b"GET / HTTP/7.3\r\nHost: x\r\n\r\n",
        b"GET /api/x HTTP/1.1 trailing-junk\r\nHost: x\r\n\r\n",
        b"GET\r\nHost: x\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost x-without-colon\r\n\r\n",
        b"G\x01T /api/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    for raw in cases {
        let (status, line) = exchange(&s.gw, raw).await;
        assert_eq!(status, 400, "{:?} answered {line:?}", preview(raw));
        s.assert_still_serving().await;
    }
    assert_eq!(s.api.hits(), cases.len(), "only the normal requests hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_is_refused() {
    let mut s = setup().await;
    let big = "a".repeat(100 * 1024);
    let raw = format!("GET /api/big HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let (status, line) = exchange(&s.gw, raw.as_bytes()).await;
    assert!(
        status == 431 || status == 400,
        "a 100 KiB header was answered {line:?}, expected 431 or 400"
    );
    assert_eq!(
        s.api.hits(),
        0,
        "the oversized request reached the upstream"
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_many_headers_are_refused() {
    let mut s = setup().await;
    let mut raw = String::from("GET /api/many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        raw.push_str(&format!("X-H{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    let (status, line) = exchange(&s.gw, raw.as_bytes()).await;
    assert!(
        status == 431 || status == 400,
        "2000 headers were answered {line:?}, expected 431 or 400"
    );
    assert_eq!(
        s.api.hits(),
        0,
        "the request with 2000 headers reached the upstream"
    );
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_refused_and_nothing_is_smuggled() {
    let mut s = setup().await;
    // Read by Content-Length, the body is `0\r\n\r\n` + 30 bytes of the second request; read
    // as chunked, the body ends after `0\r\n\r\n` and `GET /smuggled` is a second request.
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = format!(
        "POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let mut conn = RawConn::connect(s.gw.addr).await;
    let _ = conn.send(raw.as_bytes()).await;
    let first = conn.read_response(READ_LIMIT).await;
    // Whatever follows must not be a response to a smuggled request; wait for the close so
    // that anything the gateway would have done with the rest of the bytes has happened.
    let (rest, closed) = conn.read_until_closed(Duration::from_secs(3)).await;
    assert!(
        closed,
        "connection kept open after an ambiguous request: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        s.smuggled.hits(),
        0,
        "a request smuggled behind Content-Length + chunked reached an upstream"
    );
    let first = first.expect("the ambiguous request is answered");
    assert_eq!(
        first.status, 400,
        "Content-Length + Transfer-Encoding: chunked answered {:?}",
        first.status_line
    );
    assert_eq!(
        s.api.hits(),
        0,
        "the ambiguous request reached the upstream"
    );
    s.assert_still_serving().await;
    assert_eq!(s.smuggled.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_different_content_lengths_get_400() {
    let mut s = setup().await;
    let raw = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde";
    let (status, line) = exchange(&s.gw, raw).await;
    assert_eq!(status, 400, "two Content-Length values answered {line:?}");
    assert_eq!(s.api.hits(), 0);
    let raw = b"POST /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 5\r\n\r\nabcde";
    let (status, line) = exchange(&s.gw, raw).await;
    assert_eq!(status, 400, "`Content-Length: 3, 5` answered {line:?}");
    assert_eq!(s.api.hits(), 0);
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_inside_its_header_is_cut_off() {
    let mut s = setup().await;
    let mut conn = RawConn::connect(s.gw.addr).await;
    conn.send(b"GET /api/slow HTTP/1.1\r\nHost: x\r\nX-Partial: still")
        .await
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = conn.read_until_closed(Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(
        closed,
        "header_read_timeout_ms is 500 but a stalled header was kept open for {took:?}"
    );
    // Either a bare close or a 408 before it is fine; anything else is not.
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer to a stalled header: {answer:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "cut off after {took:?}, before the 500 ms timeout"
    );
    assert_eq!(s.api.hits(), 0);
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_outlives_the_header_timeout() {
    // header_read_timeout_ms bounds a header in progress, not the idle time between requests
    // (keepalive_timeout_seconds, 60 s by default).
    let mut s = setup().await;
    let mut conn = RawConn::connect(s.gw.addr).await;
    conn.send(get_request("/api/one").as_bytes()).await.unwrap();
    let resp = conn.read_response(READ_LIMIT).await.unwrap();
    assert_eq!(resp.status, 200);
    let (extra, closed) = conn.read_until_closed(Duration::from_millis(1500)).await;
    assert!(
        !closed,
        "an idle keep-alive connection was closed within 1.5 s (header timeout is 500 ms)"
    );
    assert!(extra.is_empty(), "unexpected bytes: {extra:?}");
    conn.send(get_request("/api/two").as_bytes()).await.unwrap();
    let resp = conn.read_response(READ_LIMIT).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(s.api.hits(), 2);
    s.assert_still_serving().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingoras_own_400_carries_the_current_date() {
    // Pingora answers an unparsable request itself from a pre-built header; since the server
    // keeps a response's own Date (vendor patch 4), that header must not carry a placeholder.
    let s = setup().await;
    let mut conn = RawConn::connect(s.gw.addr).await;
    let _ = conn.send(b"this is not http at all\r\n\r\n").await;
    let resp = conn.read_response(READ_LIMIT).await.expect("a 400");
    assert_eq!(resp.status, 400);
    let date = resp.header("date").expect("a Date header");
    let when = httpdate::parse_http_date(date).expect("an HTTP date");
    let age = std::time::SystemTime::now()
        .duration_since(when)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(60),
        "Date {date:?} is not current"
    );
}
