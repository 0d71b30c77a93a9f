//! HTTP/2 floods on raw frames, over h2c and over TLS (ALPN h2): rapid reset
//! (CVE-2023-44487), CONTINUATION floods, oversized and malformed HPACK blocks. Each test
//! checks what the attacking connection got (GOAWAY, RST_STREAM, 431, close), what the
//! [`RawOrigin`] behind the gateway received, and that a new connection is served normally.

use super::server_section;
use crate::harness::h2_frames::{code, frames, hpack, Drained, StreamOutcome, DEFAULT_MAX_FRAME};
use crate::harness::{GatewayProcess, H2Client, RawOrigin, TestDir};
use std::time::{Duration, Instant};

/// HEADERS + RST_STREAM pairs sent by a rapid-reset attack.
const RESET_PAIRS: usize = 10_000;
/// Pairs per write: large enough to arrive faster than streams are served, small enough that
/// a GOAWAY stops the attack early.
const RESET_BATCH: usize = 250;
/// Most flood requests the origin may see. The gateway's h2 server (pingora's
/// `default_h2_options` on the h2 crate 0.4) advertises SETTINGS_MAX_CONCURRENT_STREAMS 100,
/// and the h2 crate answers more than 20 streams reset by the client before the server
/// accepted them (`max_pending_accept_reset_streams`, default 20) with GOAWAY
/// ENHANCE_YOUR_CALM. So at most 100 streams can be in flight to the origin when the GOAWAY
/// comes, plus the 20 the reset allowance lets through: 120 of the 10,000.
const RESET_ORIGIN_BOUND: usize = 100 + 20;
/// Bytes of CONTINUATION payload a flood offers (the gateway should stop reading long before).
const CONTINUATION_BYTES: usize = 4 * 1024 * 1024;
/// Bound on waiting for the gateway's reaction to an attack.
const REACTION_LIMIT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    H2c,
    Tls,
}

/// A gateway with one catch-all route to a raw origin, on an h2c or a TLS listener.
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    transport: Transport,
    _certs: Option<TestDir>,
}

async fn site(transport: Transport) -> Site {
    let origin = RawOrigin::start().await;
    let (listener, certs) = match transport {
        Transport::H2c => ("    h2c: true\n".to_string(), None),
        Transport::Tls => {
            let certs = TestDir::new();
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
            let cert = certs.write("cert.pem", &ck.cert.pem());
            let key = certs.write("key.pem", &ck.key_pair.serialize_pem());
            (
                format!(
                    "    tls: {{ cert: {}, key: {} }}\n",
                    cert.display(),
                    key.display()
                ),
                Some(certs),
            )
        }
    };
    // max_header_bytes below the h2 crate's 64 KiB header-list limit, so that the gateway's
    // own check is reachable over HTTP/2 (see `oversized_header_blocks_are_refused`).
    let gw = GatewayProcess::start(&format!(
        r#"{server}  max_header_bytes: 32768
listeners:
  - address: {{listen}}
{listener}upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    Site {
        gw,
        origin,
        transport,
        _certs: certs,
    }
}

impl Site {
    async fn connect(&self) -> H2Client {
        let mut c = match self.transport {
            Transport::H2c => H2Client::connect_h2c(self.gw.addr).await,
            Transport::Tls => H2Client::connect_tls(self.gw.addr, "localhost").await,
        }
        .unwrap_or_else(|e| panic!("{:?} connect: {e}", self.transport));
        c.wait_settings(REACTION_LIMIT)
            .await
            .expect("the gateway's SETTINGS");
        c
    }

    /// A well-formed GET on raw frames is answered by the origin: checks the frame client
    /// (and its `:status` reading of the gateway's Huffman-coded block) before an attack.
    async fn assert_raw_client_works(&self) {
        let mut c = self.connect().await;
        let id = c.get("/raw-sanity").await.expect("send GET");
        let out = c.read_stream(id, REACTION_LIMIT).await;
        assert_eq!(out.status, Some(200), "{out:?}");
        assert!(out.ended, "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.body).starts_with("origin request "),
            "{out:?}"
        );
        assert!(self.origin.saw_target_containing("/raw-sanity"));
    }

    /// The gateway is alive and serves a normal HTTP/2 request on a new connection.
    async fn assert_serving(&mut self, path: &str) {
        assert!(self.gw.is_running(), "gateway died:\n{}", self.gw.log());
        let builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5));
        let (client, url) = match self.transport {
            Transport::H2c => (
                builder.http2_prior_knowledge().build().unwrap(),
                self.gw.url(path),
            ),
            Transport::Tls => (
                builder
                    .danger_accept_invalid_certs(true)
                    .resolve("localhost", self.gw.addr)
                    .build()
                    .unwrap(),
                format!("https://localhost:{}{path}", self.gw.addr.port()),
            ),
        };
        let resp = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("a normal request after the attack: {e}"));
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let seq: usize = resp.headers()["x-origin-req"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let seen = self.origin.requests();
        assert_eq!(
            seen.iter()
                .find(|r| r.seq == seq)
                .map(|r| r.target.as_str()),
            Some(path)
        );
    }

    /// The origin's request count once it has stopped changing for 200 ms (at most 2 s):
    /// flood requests still in flight through the gateway land before it is read.
    async fn settled_count(&self) -> usize {
        let (mut last, mut since) = (self.origin.count(), Instant::now());
        crate::harness::wait_until(Duration::from_secs(2), || {
            let now = self.origin.count();
            if now != last {
                (last, since) = (now, Instant::now());
            }
            async move { since.elapsed() >= Duration::from_millis(200) }
        })
        .await;
        self.origin.count()
    }
}

/// The connection ended: a GOAWAY (with an error code), a close, or a failed write.
fn assert_ended(d: &Drained, write_failed: bool, what: &str) {
    assert!(
        d.goaway().is_some_and(|g| g.code != code::NO_ERROR) || d.closed || write_failed,
        "{what}: the connection is still up: {}",
        d.summary()
    );
}

async fn rapid_reset(transport: Transport) {
    let mut site = site(transport).await;
    site.assert_raw_client_works().await;
    let before = site.origin.count();
    let mut c = site.connect().await;
    let started = Instant::now();
    let (mut sent, mut write_failed) = (0, false);
    while sent < RESET_PAIRS {
        let mut batch = Vec::with_capacity(RESET_BATCH * 80);
        for _ in 0..RESET_BATCH {
            let id = c.next_stream_id();
            let block = c.request_block("GET", &format!("/rr/{id}"), &[]);
            batch.extend(frames::headers(id, &block, true, true));
            batch.extend(frames::rst_stream(id, code::CANCEL));
        }
        if c.send(&batch).await.is_err() {
            write_failed = true;
            break;
        }
        sent += RESET_BATCH;
    }
    let d = c
        .drain_until(REACTION_LIMIT, |f| f.goaway().is_some())
        .await;
    let mut d2 = c.drain(Duration::from_millis(500)).await;
    let closed = d.closed || d2.closed;
    d2.frames.splice(0..0, d.frames);
    d2.closed = closed;
    let flood_time = started.elapsed();
    let reached = site.settled_count().await - before;
    eprintln!(
        "{transport:?} rapid reset: {sent} pairs written in {flood_time:?} (write failed: \
         {write_failed}); {}; the origin saw {reached} flood requests",
        d2.summary()
    );
    assert!(
        reached <= RESET_ORIGIN_BOUND,
        "{transport:?}: {reached} of {sent} reset requests reached the origin (bound \
         {RESET_ORIGIN_BOUND}); {}",
        d2.summary()
    );
    if let Some(g) = d2.goaway() {
        assert_eq!(g.code, code::ENHANCE_YOUR_CALM, "{g:?}");
    }
    assert_ended(&d2, write_failed, &format!("{transport:?} rapid reset"));
    assert!(
        !site
            .origin
            .requests()
            .iter()
            .any(|r| !r.target.starts_with("/rr/") && r.target != "/raw-sanity"),
        "{}",
        site.origin.describe()
    );
    site.assert_serving("/after-rapid-reset").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_over_h2c_is_cut_off_and_bounded() {
    rapid_reset(Transport::H2c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_over_tls_is_cut_off_and_bounded() {
    rapid_reset(Transport::Tls).await;
}

/// HEADERS without END_HEADERS, then CONTINUATION frames of `frame_payload` bytes each (valid
/// literal fields, or nothing when 0) up to `total` frames; the gateway must end the
/// connection and the origin must see nothing.
async fn continuation_flood(site: &mut Site, frame_payload: usize, total: usize) {
    let what = format!(
        "{:?} CONTINUATION flood of {total} x {frame_payload} bytes",
        site.transport
    );
    let before = site.origin.count();
    let mut c = site.connect().await;
    let id = c.next_stream_id();
    let head = c.request_block("GET", "/cont", &[]);
    let mut filler = Vec::with_capacity(frame_payload);
    let mut i = 0;
    while filler.len() + 120 <= frame_payload {
        filler.extend(hpack::literal(format!("x-c{i}").as_bytes(), &[b'v'; 100]));
        i += 1;
    }
    let mut write_failed = c
        .send(&frames::headers(id, &head, true, false))
        .await
        .is_err();
    let per_write = 64;
    let mut sent = 0;
    while !write_failed && sent < total {
        let n = per_write.min(total - sent);
        let batch: Vec<u8> = (0..n)
            .flat_map(|_| frames::continuation(id, &filler, false))
            .collect();
        write_failed = c.send(&batch).await.is_err();
        sent += n;
    }
    let d = c.drain(REACTION_LIMIT).await;
    eprintln!(
        "{what}: {sent} frames written (write failed: {write_failed}); {}",
        d.summary()
    );
    assert_ended(&d, write_failed, &what);
    assert!(
        d.statuses().iter().all(|(s, _)| *s != id),
        "{what}: the stream got a response: {}",
        d.summary()
    );
    assert_eq!(
        site.settled_count().await,
        before,
        "{what}: {}",
        site.origin.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_floods_over_h2c_end_the_connection() {
    let mut site = site(Transport::H2c).await;
    site.assert_raw_client_works().await;
    continuation_flood(
        &mut site,
        DEFAULT_MAX_FRAME,
        CONTINUATION_BYTES / DEFAULT_MAX_FRAME,
    )
    .await;
    // Empty frames: the cheapest flood, 9 bytes each, that never grows the header block.
    continuation_flood(&mut site, 0, 100_000).await;
    site.assert_serving("/after-continuation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_over_tls_ends_the_connection() {
    let mut site = site(Transport::Tls).await;
    site.assert_raw_client_works().await;
    continuation_flood(
        &mut site,
        DEFAULT_MAX_FRAME,
        CONTINUATION_BYTES / DEFAULT_MAX_FRAME,
    )
    .await;
    site.assert_serving("/after-continuation").await;
}

/// Sends one request whose header block is `extra` beyond the pseudo-headers, split into
/// frames of the default maximum size; it must be refused (431, RST_STREAM or GOAWAY/close)
/// and never reach the origin. When only the stream was refused, the connection must still
/// serve a next stream. Returns the refused stream's outcome.
async fn oversized_block(site: &mut Site, what: &str, extra: Vec<u8>) -> StreamOutcome {
    let before = site.origin.count();
    let mut c = site.connect().await;
    let id = c.next_stream_id();
    let mut block = c.request_block("GET", "/big", &[]);
    block.extend(extra);
    let write_failed = c
        .send(&frames::header_block(id, &block, true, DEFAULT_MAX_FRAME))
        .await
        .is_err();
    let out = c.read_stream(id, REACTION_LIMIT).await;
    eprintln!("{what}: {out:?} (write failed: {write_failed})");
    let refused = out.status == Some(431)
        || out.reset.is_some()
        || out.goaway.is_some()
        || out.closed
        || write_failed;
    assert!(
        refused && out.status.is_none_or(|s| s == 431),
        "{what}: not refused: {out:?}"
    );
    assert_eq!(
        site.settled_count().await,
        before,
        "{what}: reached the origin: {}",
        site.origin.describe()
    );
    if out.goaway.is_none() && !out.closed && !write_failed {
        // Only the stream was refused: the connection serves its next stream.
        let next = c.get("/after-big").await.expect("send a next stream");
        let next = c.read_stream(next, REACTION_LIMIT).await;
        assert_eq!(next.status, Some(200), "{what}: next stream: {next:?}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_blocks_are_refused() {
    let mut site = site(Transport::H2c).await;
    site.assert_raw_client_works().await;
    oversized_block(
        &mut site,
        "a 1 MiB header value",
        hpack::literal(b"x-big", &vec![b'a'; 1024 * 1024]),
    )
    .await;
    // 1,200 fields of 59 decoded bytes each (RFC 7541 section 4.1: name + value + 32) are
    // 70,800 bytes, over the 64 KiB SETTINGS_MAX_HEADER_LIST_SIZE, in only 36 KB on the wire.
    let many: Vec<u8> = (0..1200)
        .flat_map(|i| hpack::literal(format!("x-h{i:04}").as_bytes(), &[b'v'; 20]))
        .collect();
    oversized_block(&mut site, "1,200 small headers over 64 KiB", many).await;
    // Under the h2 crate's limit but over the gateway's own `max_header_bytes` (32 KiB
    // here; it counts name + value + 4 per field): the gateway's check answers 431 itself.
    let two: Vec<u8> = (0..2)
        .flat_map(|i| hpack::literal(format!("x-half{i}").as_bytes(), &vec![b'h'; 20 * 1024]))
        .collect();
    let out = oversized_block(&mut site, "two 20 KiB headers over max_header_bytes", two).await;
    assert_eq!(out.status, Some(431), "{out:?}");
    site.assert_serving("/after-oversized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_hpack_blocks_end_the_connection() {
    let mut site = site(Transport::H2c).await;
    site.assert_raw_client_works().await;
    // (what, bytes before the request's fields, bytes after them)
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("an index past both tables", vec![], hpack::indexed(1000)),
        ("an integer past 2^64", vec![], hpack::overlong_int(12)),
        (
            "a string shorter than its length",
            vec![],
            [vec![0x00], hpack::lying_str(200, b"x-short")].concat(),
        ),
        (
            "a table size update above SETTINGS_HEADER_TABLE_SIZE (4096)",
            hpack::table_size_update(1 << 20),
            vec![],
        ),
        // 32 one-bits hold the 30-bit EOS symbol, which RFC 7541 section 5.2 makes an error.
        (
            "a Huffman name containing EOS",
            vec![],
            vec![0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, b'v'],
        ),
    ];
    for (what, prefix, suffix) in cases {
        let before = site.origin.count();
        let mut c = site.connect().await;
        let id = c.next_stream_id();
        let mut block = prefix;
        block.extend(c.request_block("GET", "/malformed", &[]));
        block.extend(suffix);
        let write_failed = c
            .send(&frames::headers(id, &block, true, true))
            .await
            .is_err();
        let out = c.read_stream(id, REACTION_LIMIT).await;
        eprintln!("{what}: {out:?}");
        // Any GOAWAY with an error code ends the connection. The h2 crate answers most of
        // these with COMPRESSION_ERROR but an index past both tables with PROTOCOL_ERROR.
        assert!(
            out.goaway
                .as_ref()
                .is_some_and(|g| g.code != code::NO_ERROR)
                || out.closed
                || write_failed,
            "{what}: a decoding error must end the connection (RFC 9113 section 4.3): {out:?}"
        );
        assert_eq!(out.status, None, "{what}: answered: {out:?}");
        assert_eq!(
            site.settled_count().await,
            before,
            "{what}: {}",
            site.origin.describe()
        );
    }
    site.assert_serving("/after-malformed").await;
}
