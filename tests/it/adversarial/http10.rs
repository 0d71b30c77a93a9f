//! HTTP/1.0 clients: they cannot parse chunked framing and close after each response unless
//! both sides agree on `keep-alive`. An origin's chunked answer must reach them as raw bytes,
//! delimited by a length or by the close; a connection is only kept when the answer says so;
//! and an HTTP/1.1 client on the same route still gets chunked keep-alive responses.

use super::server_section;
use crate::harness::{GatewayProcess, OriginReply, RawConn, RawOrigin};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(3);
/// The decoded body of the origin's chunked reply.
const BODY: &[u8] = b"hello, chunked world\n";

/// A gateway whose only route is `/x` (anything else is a 404 the gateway writes itself),
/// to a raw origin that answers `/x/chunked` chunked and everything else with Content-Length.
async fn site() -> (GatewayProcess, RawOrigin) {
    let origin = RawOrigin::start().await;
    // Three chunks, one with an extension, on the wire exactly as written.
    let chunked = b"7\r\nhello, \r\n8;ext=1\r\nchunked \r\n6\r\nworld\n\r\n0\r\n\r\n".to_vec();
    origin.reply_for(
        "/x/chunked",
        OriginReply::new(200, chunked)
            .header("Transfer-Encoding", "chunked")
            .header("Content-Type", "text/plain"),
    );
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - {{ name: x, match: {{ path_prefix: /x }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    (gw, origin)
}

/// One response read to the connection's close: status line, lower-cased headers, body.
struct Whole {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Whole {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits everything read up to the close into head and body.
fn split(raw: &[u8]) -> Whole {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Whole {
        status_line,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Whether `Connection` lists `token`.
fn connection_has(v: Option<&str>, token: &str) -> bool {
    v.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_gets_a_chunked_origin_reply_unchunked_and_then_the_close() {
    let (gw, origin) = site().await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /x/chunked HTTP/1.0\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let (raw, closed) = conn.read_until_closed(LIMIT).await;
    assert!(
        closed,
        "the gateway kept an HTTP/1.0 connection without keep-alive open: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let resp = split(&raw);
    assert!(resp.status_line.contains(" 200"), "{}", resp.status_line);
    assert_eq!(
        resp.header("transfer-encoding"),
        None,
        "chunked framing sent to an HTTP/1.0 client: {:?}",
        resp.headers
    );
    assert_eq!(
        resp.body,
        BODY,
        "the body must be the raw bytes, without chunk framing: {:?}",
        String::from_utf8_lossy(&resp.body)
    );
    if let Some(len) = resp.header("content-length") {
        assert_eq!(len, BODY.len().to_string(), "{:?}", resp.headers);
    }
    assert!(
        !connection_has(resp.header("connection"), "keep-alive"),
        "promised keep-alive, then closed: {:?}",
        resp.headers
    );
    // The origin saw one request, nothing malformed.
    assert_eq!(origin.targets(), vec!["GET /x/chunked".to_string()]);
    assert!(origin.malformed().is_empty(), "{}", origin.describe());
    eprintln!(
        "HTTP/1.0 chunked: {} {:?}; origin got {} with Connection {:?}",
        resp.status_line,
        resp.headers,
        origin.requests()[0].version,
        origin.requests()[0].header("connection")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keepalive_with_a_content_length_reply_may_serve_a_second_request() {
    let (gw, origin) = site().await;
    let mut conn = RawConn::connect(gw.addr).await;
    let req = |path: &str| {
        format!("GET {path} HTTP/1.0\r\nHost: gateway.test\r\nConnection: keep-alive\r\n\r\n")
    };
    conn.send(req("/x/one").as_bytes()).await.unwrap();
    let resp = conn.read_response(LIMIT).await.expect("first response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("transfer-encoding"), None, "{resp:?}");
    assert_eq!(resp.body, b"origin request 1\n");
    let conn_header = resp.header("connection");
    if connection_has(conn_header, "close") || !connection_has(conn_header, "keep-alive") {
        // Not kept: an HTTP/1.0 client assumes a close unless the answer says keep-alive,
        // so the gateway must then actually close.
        let (_, closed) = conn.read_until_closed(LIMIT).await;
        assert!(
            closed,
            "no keep-alive in the answer ({conn_header:?}) but the connection stayed open"
        );
        eprintln!("HTTP/1.0 keep-alive: not kept (Connection {conn_header:?}), closed");
    } else {
        conn.send(req("/x/two").as_bytes()).await.unwrap();
        let second = conn.read_response(LIMIT).await.expect("second response");
        assert_eq!(second.status, 200, "{second:?}");
        assert_eq!(second.body, b"origin request 2\n");
        eprintln!("HTTP/1.0 keep-alive: kept, second request served");
    }
    assert!(origin.malformed().is_empty(), "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keepalive_to_a_chunked_reply_is_never_chunked() {
    // The length is unknown when the header goes out, so the gateway can delimit the body
    // only by closing (or by buffering it and sending a Content-Length).
    let (gw, origin) = site().await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /x/chunked HTTP/1.0\r\nHost: gateway.test\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response(LIMIT).await.expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("transfer-encoding"), None, "{resp:?}");
    assert_eq!(resp.body, BODY, "{:?}", String::from_utf8_lossy(&resp.body));
    if resp.header("content-length").is_none() {
        // EOF-delimited: read_response read to the close already.
        assert!(
            !connection_has(resp.header("connection"), "keep-alive"),
            "an EOF-delimited body announced keep-alive: {resp:?}"
        );
    }
    assert_eq!(origin.count(), 1, "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_to_a_gateway_written_404_closes() {
    let (gw, origin) = site().await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /nowhere HTTP/1.0\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let (raw, closed) = conn.read_until_closed(LIMIT).await;
    assert!(
        closed,
        "the gateway kept an HTTP/1.0 connection open after its 404: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let resp = split(&raw);
    assert!(resp.status_line.contains(" 404"), "{}", resp.status_line);
    assert_eq!(resp.header("transfer-encoding"), None, "{:?}", resp.headers);
    if let Some(len) = resp.header("content-length") {
        assert_eq!(len, resp.body.len().to_string());
    }
    assert_eq!(origin.count(), 0, "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_still_gets_chunked_keepalive_from_the_same_origin() {
    let (gw, origin) = site().await;
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..2 {
        conn.send(b"GET /x/chunked HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
            .await
            .unwrap();
        let resp = conn
            .read_response(LIMIT)
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(
            resp.header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
            "request {i}: {resp:?}"
        );
        assert_eq!(resp.body, BODY, "request {i}");
        assert!(
            !connection_has(resp.header("connection"), "close"),
            "request {i}: {resp:?}"
        );
    }
    assert_eq!(origin.count(), 2, "{}", origin.describe());
}
