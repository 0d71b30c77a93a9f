//! Proxying behaviour end to end: streaming without buffering, WebSocket, h2c, TLS with h2,
//! keep-alive and request ids.

use crate::harness::raw_http::get_request;
use crate::harness::{client, GatewayProcess, RawConn, TestDir, TestUpstream, WsEchoUpstream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;
/// Size of each streamed transfer.
const TRANSFER: u64 = 100 * MIB;
/// The gateway's resident memory must stay below this during a transfer (KiB).
const RSS_CEILING_KIB: u64 = 120 * 1024;

/// One upstream `backend` behind a catch-all route.
fn catch_all(up: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {up} }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: backend
"#
    )
}

/// Records the highest RSS sample of the gateway.
struct RssPeak {
    gw: Arc<GatewayProcess>,
    peak: AtomicU64,
    samples: AtomicU64,
}

impl RssPeak {
    fn new(gw: Arc<GatewayProcess>) -> Arc<RssPeak> {
        let r = Arc::new(RssPeak {
            gw,
            peak: AtomicU64::new(0),
            samples: AtomicU64::new(0),
        });
        r.sample();
        r
    }

    fn sample(&self) {
        let kib = self.gw.rss_kib();
        self.peak.fetch_max(kib, Ordering::Relaxed);
        self.samples.fetch_add(1, Ordering::Relaxed);
    }

    fn assert_flat(&self, what: &str) {
        let peak = self.peak.load(Ordering::Relaxed);
        let samples = self.samples.load(Ordering::Relaxed);
        eprintln!(
            "{what}: gateway RSS peak {} KiB over {samples} samples",
            peak
        );
        assert!(peak > 0, "RSS of the gateway could not be read");
        assert!(samples >= 10, "only {samples} RSS samples taken");
        assert!(
            peak < RSS_CEILING_KIB,
            "{what}: gateway RSS peaked at {} MiB (ceiling {} MiB): it buffers the body",
            peak / 1024,
            RSS_CEILING_KIB / 1024
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_100_mib_download_without_buffering() {
    let up = TestUpstream::start("a").await;
    let gw = Arc::new(GatewayProcess::start(&catch_all(up.addr)));
    let rss = RssPeak::new(gw.clone());

    let resp = client()
        .get(gw.url(&format!("/download?bytes={TRANSFER}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "a");
    let mut body = resp.bytes_stream();
    let (mut total, mut next_sample) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("download body chunk");
        assert!(
            chunk.iter().all(|&b| b == b'x'),
            "corrupted byte near offset {total}"
        );
        total += chunk.len() as u64;
        if total >= next_sample {
            rss.sample();
            next_sample += 2 * MIB;
        }
    }
    rss.sample();
    assert_eq!(total, TRANSFER, "download truncated or padded");
    rss.assert_flat("100 MiB download");
}

/// Streams `TRANSFER` bytes in 1 MiB chunks to `/upload`, sampling the gateway's RSS as the
/// client produces each chunk; returns the byte count the upstream reports.
async fn upload(gw: &Arc<GatewayProcess>, rss: &Arc<RssPeak>, with_length: bool) -> u64 {
    let chunk = Bytes::from(vec![b'u'; MIB as usize]);
    let sampler = rss.clone();
    let chunks = futures_util::stream::iter(0..TRANSFER / MIB).map(move |_| {
        sampler.sample();
        Ok::<_, std::io::Error>(chunk.clone())
    });
    let mut req = client()
        .post(gw.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks));
    if with_length {
        req = req.header(reqwest::header::CONTENT_LENGTH, TRANSFER);
    }
    let resp = req.send().await.expect("upload request");
    rss.sample();
    assert_eq!(resp.status(), 200);
    resp.text()
        .await
        .unwrap()
        .parse()
        .expect("upstream answers with the byte count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_100_mib_chunked_upload_without_buffering() {
    let up = TestUpstream::start("a").await;
    let gw = Arc::new(GatewayProcess::start(&catch_all(up.addr)));
    let rss = RssPeak::new(gw.clone());
    assert_eq!(upload(&gw, &rss, false).await, TRANSFER);
    rss.assert_flat("100 MiB chunked upload");
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_100_mib_content_length_upload_without_buffering() {
    let up = TestUpstream::start("a").await;
    let gw = Arc::new(GatewayProcess::start(&catch_all(up.addr)));
    let rss = RssPeak::new(gw.clone());
    assert_eq!(upload(&gw, &rss, true).await, TRANSFER);
    rss.assert_flat("100 MiB content-length upload");
    assert_eq!(up.hits(), 1);
}

async fn next_message<S>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo within 5 s")
        .expect("stream still open")
        .expect("valid frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_are_echoed_through_the_gateway() {
    let echo = WsEchoUpstream::start().await;
    let up = TestUpstream::start("http").await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: {{listen}}
upstreams:
  ws:
    servers: [{{ address: {} }}]
  http:
    servers: [{{ address: {} }}]
routes:
  - name: ws
    match: {{ path: /ws }}
    upstream: ws
  - name: rest
    match: {{ path_prefix: / }}
    upstream: http
"#,
        echo.addr, up.addr
    ));

    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    assert_eq!(echo.handshakes(), 1);

    for i in 0..5 {
        let text = format!("hello #{i} through the gateway");
        ws.send(Message::Text(text.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::Text(text));

        let bin: Vec<u8> = (0..=255u8).cycle().skip(i).take(1000 + i).collect();
        ws.send(Message::Binary(bin.clone())).await.unwrap();
        assert_eq!(next_message(&mut ws).await, Message::Binary(bin));
    }
    // A frame larger than any single read or write buffer.
    let big: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(big.clone())).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::Binary(big));

    ws.close(None).await.unwrap();
    // The HTTP routes on the same listener are unaffected.
    let resp = client().get(gw.url("/plain")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_speaks_http2_with_prior_knowledge_and_http1() {
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: {{listen}}
    h2c: true
upstreams:
  backend:
    servers: [{{ address: {} }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: backend
"#,
        up.addr
    ));

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for i in 0..3 {
        let resp = h2.get(gw.url(&format!("/h2/{i}"))).send().await.unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["uri"], format!("/h2/{i}"));
        assert_eq!(body["headers"]["x-forwarded-proto"], "http");
    }

    let resp = client().get(gw.url("/h1")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["uri"], "/h1");
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_negotiates_h2_and_forwards_https_proto() {
    let certs = TestDir::new();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certs.write("cert.pem", &ck.cert.pem());
    let key = certs.write("key.pem", &ck.key_pair.serialize_pem());
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: {{listen}}
    tls: {{ cert: {}, key: {} }}
upstreams:
  backend:
    servers: [{{ address: {} }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: backend
"#,
        cert.display(),
        key.display(),
        up.addr
    ));

    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", gw.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/secure?x=1", gw.addr.port());
    let resp = tls.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN chose h2");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["uri"], "/secure?x=1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");

    // An HTTP/1.1-only TLS client is served too (ALPN http/1.1).
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", gw.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = h1.get(&url).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keepalive_serves_several_requests_on_one_connection() {
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&catch_all(up.addr));

    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..5 {
        conn.send(get_request(&format!("/keepalive/{i}")).as_bytes())
            .await
            .unwrap_or_else(|e| panic!("request {i} on the kept-alive connection: {e}"));
        let resp = conn
            .read_response(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("response {i} on the kept-alive connection: {e}"));
        assert_eq!(resp.status, 200, "request {i}");
        assert_ne!(
            resp.header("connection").map(|v| v.to_ascii_lowercase()),
            Some("close".into()),
            "request {i} closed the connection"
        );
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["uri"], format!("/keepalive/{i}"));
    }
    // A streamed (chunked) response on the same connection keeps it usable as well.
    conn.send(get_request("/download?bytes=200000").as_bytes())
        .await
        .unwrap();
    let resp = conn.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 200_000);
    conn.send(get_request("/keepalive/last").as_bytes())
        .await
        .unwrap();
    let resp = conn.read_response(Duration::from_secs(5)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(up.hits(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_generated_when_absent() {
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&catch_all(up.addr));
    let c = client();

    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = c.get(gw.url("/rid")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp
            .headers()
            .get("x-request-id")
            .expect("x-request-id returned downstream")
            .to_str()
            .unwrap()
            .to_string();
        assert!(!id.trim().is_empty(), "empty request id");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            body["headers"]["x-request-id"], id,
            "upstream saw the same id the client got"
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids repeat: {ids:?}");
}
