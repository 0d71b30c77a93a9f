//! Upstream failure attribution: a client that stalls its own request body is the client's
//! fault (408), never the upstream's, so it must not open the circuit breaker, eject a backend
//! through passive health, or hold the half-open probe slot. And a `101 Switching Protocols`
//! the client did not ask for (or to a protocol it did not offer) is a bad upstream answer
//! (502), never a tunnel from the client to the origin.
//!
//! Each case asserts what the client got, what the [`RawOrigin`] received, and the breaker and
//! backend state in admin `/status`.

use crate::harness::h2_frames::{flag, frames, hpack, kind, StreamOutcome};
use crate::harness::raw_http::RawResponse;
use crate::harness::{
    free_addr, wait_until, GatewayProcess, H2Client, OriginReply, RawConn, RawOrigin,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `server:` for these tests: the harness's private paths, and a client body timeout (500 ms)
/// well below the upstream read timeout (2 s), so that a stalled body is seen by the
/// gateway as a client stall long before the origin's silence could count as an upstream one.
const SERVER: &str = "server:
  workers: 2
  pid_file: {dir}/gw.pid
  upgrade_sock: {dir}/upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  header_read_timeout_ms: 1000
  client_body_timeout_ms: 500
  keepalive_timeout_seconds: 5
";

/// Bound on any answer; a stall is answered after client_body_timeout_ms (500 ms).
const ANSWER_LIMIT: Duration = Duration::from_secs(3);
/// Stalled requests sent at once.
const STALLS: usize = 5;
/// The announced body length; one byte of it is sent.
const BODY_LEN: usize = 100;

/// A gateway in front of one [`RawOrigin`]: the first listener is plain HTTP/1.1, the second
/// (`h2c`) also accepts cleartext HTTP/2 with prior knowledge.
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    h2c: SocketAddr,
}

/// Starts the site; `upstream_extra` are more keys of the upstream (indented four spaces).
async fn site(open_seconds: f64, upstream_extra: &str) -> Site {
    let origin = RawOrigin::start().await;
    let h2c = free_addr();
    let gw = GatewayProcess::start(&format!(
        r#"{SERVER}listeners:
  - address: {{listen}}
  - address: {h2c}
    h2c: true
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
    timeouts: {{ read_ms: 2000 }}
    circuit_breaker: {{ failure_threshold: 3, open_seconds: {open_seconds} }}
{upstream_extra}routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
"#,
        origin = origin.addr,
    ));
    Site { gw, origin, h2c }
}

impl Site {
    /// The breaker state of upstream `origin` and the `ejected` flag of each of its backends.
    async fn health(&self) -> (String, u64, Vec<bool>) {
        let status = self.gw.status().await;
        let up = &status["upstreams"]["origin"];
        let state = up["circuit_breaker"]["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no breaker state in /status: {status}"))
            .to_string();
        let transitions = up["circuit_breaker"]["transitions"]
            .as_u64()
            .unwrap_or_else(|| panic!("no breaker transitions in /status: {status}"));
        let ejected = up["backends"]
            .as_array()
            .unwrap_or_else(|| panic!("no backends in /status: {status}"))
            .iter()
            .map(|b| {
                b["ejected"]
                    .as_bool()
                    .unwrap_or_else(|| panic!("no ejected flag in /status: {status}"))
            })
            .collect();
        (state, transitions, ejected)
    }

    /// The breaker is closed (and never moved) and no backend is ejected.
    async fn assert_untouched(&self, what: &str) {
        let (state, transitions, ejected) = self.health().await;
        assert_eq!(
            (state.as_str(), transitions),
            ("closed", 0),
            "{what}: client stalls moved the breaker; origin: {}",
            self.origin.describe()
        );
        assert!(
            ejected.iter().all(|e| !e),
            "{what}: client stalls ejected a backend: {ejected:?}"
        );
    }

    /// A normal GET on a fresh HTTP/1.1 connection is answered 200 by the origin.
    async fn assert_h1_serving(&self, path: &str) {
        let mut conn = RawConn::connect(self.gw.addr).await;
        conn.send(get(path).as_bytes()).await.expect("send a GET");
        let resp = conn
            .read_response(ANSWER_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("GET {path} after the stalls: {e}"));
        assert_from_origin(&resp, path);
        assert!(
            self.origin.saw_target_containing(path),
            "{}",
            self.origin.describe()
        );
    }

    /// What the origin got of the stalled uploads: never a complete request, at most the
    /// header and the one byte sent; every upstream connection that carried one is closed
    /// (abandoned, not returned to the pool mid-request). Returns how many reached it.
    async fn assert_uploads_abandoned(&self, what: &str) -> usize {
        assert!(
            !self
                .origin
                .requests()
                .iter()
                .any(|r| r.target.starts_with("/upload")),
            "{what}: the origin parsed a complete stalled upload: {}",
            self.origin.describe()
        );
        let reached = count(&self.origin.all_raw(), b"POST /upload");
        let abandoned = |origin: &RawOrigin| {
            origin
                .malformed()
                .iter()
                .filter(|m| m.bytes.starts_with(b"POST /upload"))
                .count()
        };
        let closed = wait_until(ANSWER_LIMIT, || async {
            abandoned(&self.origin) >= reached
        })
        .await;
        assert!(
            closed,
            "{what}: {reached} stalled upload(s) reached the origin, only {} of their \
             connections were closed: {}",
            abandoned(&self.origin),
            self.origin.describe()
        );
        for m in self.origin.malformed() {
            assert_eq!(
                m.reason,
                "connection closed inside a request",
                "{what}: {}",
                self.origin.describe()
            );
            if let Some(end) = find(&m.bytes, b"\r\n\r\n") {
                assert!(
                    m.bytes.len() - (end + 4) <= 1,
                    "{what}: the origin got more body than the client sent: {:?}",
                    String::from_utf8_lossy(&m.bytes)
                );
            }
        }
        reached
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
}

/// The head of a POST announcing [`BODY_LEN`] bytes, plus the one byte that is all it sends.
fn stalled_post(path: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {BODY_LEN}\r\n\r\nx")
}

fn assert_from_origin(resp: &RawResponse, path: &str) {
    assert_eq!(resp.status, 200, "GET {path}: {resp:?}");
    assert!(
        resp.header("x-origin-req").is_some(),
        "GET {path} not answered by the origin: {resp:?}"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// What one stalled HTTP/1.1 POST got: a response, or how the connection ended without one.
async fn stall_h1(addr: SocketAddr, i: usize) -> (Result<RawResponse, String>, Duration) {
    let started = Instant::now();
    let mut conn = RawConn::connect(addr).await;
    conn.send(stalled_post(&format!("/upload/{i}")).as_bytes())
        .await
        .expect("send the stalled POST");
    let resp = conn
        .read_response(ANSWER_LIMIT)
        .await
        .map_err(|e| e.to_string());
    (resp, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_http1_bodies_get_408_and_are_not_blamed_on_the_upstream() {
    let site = site(30.0, "").await;
    // The raw origin answers at once once a request is complete; the stalled ones never are.
    let tasks: Vec<_> = (0..STALLS)
        .map(|i| tokio::spawn(stall_h1(site.gw.addr, i)))
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (resp, took) = t.await.unwrap();
        // 408 is required: the gateway must say why it gave up. (It may close the connection
        // after it, which read_response does not care about.)
        let resp = resp.unwrap_or_else(|e| {
            panic!("stall {i}: no response within {ANSWER_LIMIT:?} ({took:?}): {e}")
        });
        assert_eq!(resp.status, 408, "stall {i} after {took:?}: {resp:?}");
        assert!(
            resp.header("x-origin-req").is_none(),
            "stall {i}: the 408 came from the origin: {resp:?}"
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1900),
            "stall {i} answered after {took:?}: client_body_timeout_ms is 500, read_ms 2000"
        );
    }
    let reached = site.assert_uploads_abandoned("h1 stalls").await;
    eprintln!("h1 stalls: {reached} of {STALLS} uploads reached the origin (header + 1 byte)");
    site.assert_untouched("h1 stalls").await;
    site.assert_h1_serving("/after-h1-stalls").await;
    site.assert_untouched("after the normal GET").await;
}

/// Opens stream(s) announcing `content-length: 100` without END_STREAM, sends one DATA byte
/// on each, then reads each stream's outcome.
async fn stall_h2(c: &mut H2Client, n: usize, tag: &str) -> Vec<(u32, StreamOutcome)> {
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let id = c.next_stream_id();
        let block = c.request_block(
            "POST",
            &format!("/upload/{tag}-{i}"),
            &[("content-length", &BODY_LEN.to_string())],
        );
        out.extend(frames::headers(id, &block, false, true));
        out.extend(frames::data(id, b"x", false));
        ids.push(id);
    }
    c.send(&out).await.expect("send the stalled streams");
    // One drain for all of them: `read_stream` would drop the other streams' frames.
    let mut open: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
    let d = c
        .drain_until(ANSWER_LIMIT, |f| {
            if f.kind == kind::GOAWAY {
                return true;
            }
            let ends = f.kind == kind::RST_STREAM
                || (matches!(f.kind, kind::HEADERS | kind::DATA) && f.has(flag::END_STREAM));
            if ends {
                open.remove(&f.stream);
            }
            open.is_empty()
        })
        .await;
    ids.into_iter()
        .map(|id| {
            let mut o = StreamOutcome {
                closed: d.closed,
                goaway: d.goaway(),
                ..StreamOutcome::default()
            };
            for f in d.frames.iter().filter(|f| f.stream == id) {
                match f.kind {
                    kind::HEADERS => {
                        o.headers = true;
                        if o.status.is_none() {
                            o.status = f.header_fragment().and_then(hpack::decode_status);
                        }
                        o.ended |= f.has(flag::END_STREAM);
                    }
                    kind::DATA => {
                        o.body.extend_from_slice(f.data().unwrap_or(&[]));
                        o.ended |= f.has(flag::END_STREAM);
                    }
                    kind::RST_STREAM => {
                        o.reset = f.rst_code();
                        o.ended = true;
                    }
                    _ => {}
                }
            }
            (id, o)
        })
        .collect()
}

/// A stalled stream was answered 408 by the gateway, or reset: both tell the client the
/// request is over; the origin must not have answered it.
fn assert_stream_refused(o: &StreamOutcome, what: &str) {
    let ok = o.status == Some(408) || (o.status.is_none() && o.reset.is_some());
    assert!(ok, "{what}: expected :status 408 or RST_STREAM: {o:?}");
    assert!(o.ended || o.closed, "{what}: the stream never ended: {o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_h2_bodies_get_408_and_are_not_blamed_on_the_upstream() {
    let site = site(30.0, "").await;
    let started = Instant::now();

    // Five streams on one connection...
    let mut shared = H2Client::connect_h2c(site.h2c).await.expect("h2c connect");
    shared
        .wait_settings(ANSWER_LIMIT)
        .await
        .expect("the gateway's SETTINGS");
    let multi = stall_h2(&mut shared, STALLS, "multi");
    // ...and five connections with one stream each, at the same time.
    let singles = (0..STALLS).map(|i| {
        let addr = site.h2c;
        tokio::spawn(async move {
            let mut c = H2Client::connect_h2c(addr).await.expect("h2c connect");
            c.wait_settings(ANSWER_LIMIT).await.expect("SETTINGS");
            let mut o = stall_h2(&mut c, 1, &format!("single{i}")).await;
            (c, o.pop().unwrap().1)
        })
    });
    let singles: Vec<_> = singles.collect();
    let multi = multi.await;
    for (id, o) in &multi {
        assert_stream_refused(o, &format!("shared connection, stream {id}"));
    }
    let mut single_clients = Vec::new();
    let mut single_outcomes = Vec::new();
    for (i, t) in singles.into_iter().enumerate() {
        let (c, o) = t.await.unwrap();
        assert_stream_refused(&o, &format!("connection {i}"));
        single_outcomes.push((o.status, o.reset));
        single_clients.push(c);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1900),
        "the stalls were answered only after {took:?} (client_body_timeout_ms 500, read_ms 2000)"
    );
    eprintln!(
        "h2 stalls: shared connection {:?}; connections {:?}",
        multi
            .iter()
            .map(|(_, o)| (o.status, o.reset))
            .collect::<Vec<_>>(),
        single_outcomes
    );
    let reached = site.assert_uploads_abandoned("h2 stalls").await;
    eprintln!(
        "h2 stalls: {reached} of {} uploads reached the origin",
        2 * STALLS
    );
    site.assert_untouched("h2 stalls").await;

    // Normal requests still work: on the attacked connection when the gateway kept it, and
    // on a new one.
    if !shared.is_closed() {
        let id = shared.get("/after-h2-shared").await.expect("send GET");
        let o = shared.read_stream(id, ANSWER_LIMIT).await;
        assert_eq!(o.status, Some(200), "GET on the attacked connection: {o:?}");
    }
    let mut fresh = H2Client::connect_h2c(site.h2c).await.expect("h2c connect");
    fresh.wait_settings(ANSWER_LIMIT).await.expect("SETTINGS");
    let id = fresh.get("/after-h2-fresh").await.expect("send GET");
    let o = fresh.read_stream(id, ANSWER_LIMIT).await;
    assert_eq!(o.status, Some(200), "GET on a new h2c connection: {o:?}");
    assert!(o.ended, "{o:?}");
    assert!(site.origin.saw_target_containing("/after-h2-fresh"));
    site.assert_h1_serving("/after-h2-stalls").await;
    site.assert_untouched("after the normal requests").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_body_never_holds_the_half_open_probe() {
    // Passive health off: with one backend, three 503s would eject it for 10 s and the
    // recovery below would be hidden behind "no healthy upstream".
    let site = site(1.0, "    passive_health: { enabled: false }\n").await;
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    site.origin.set_responder(move |req| {
        if f.load(Ordering::SeqCst) {
            OriginReply::new(503, "down\n")
        } else {
            OriginReply::new(200, format!("up {}\n", req.target))
        }
    });

    // Three 503s from the origin open the circuit.
    let mut conn = RawConn::connect(site.gw.addr).await;
    for i in 0..3 {
        conn.send(get(&format!("/fail/{i}")).as_bytes())
            .await
            .unwrap();
        let resp = conn.read_response(ANSWER_LIMIT).await.unwrap();
        assert_eq!(resp.status, 503, "failure {i}: {resp:?}");
        assert!(resp.header("x-origin-req").is_some(), "{resp:?}");
    }
    drop(conn);
    let opened = wait_until(ANSWER_LIMIT, || async { site.health().await.0 == "open" }).await;
    assert!(opened, "three 503s: {:?}", site.health().await);
    let opened_at = Instant::now();
    let (_, transitions_open, _) = site.health().await;

    // Wait, polling /status, until open_seconds (1 s) have passed with the circuit still
    // open (nobody took the probe): the next request admitted would be the probe.
    let eligible = wait_until(Duration::from_secs(3), || async {
        opened_at.elapsed() >= Duration::from_millis(1200) && site.health().await.0 == "open"
    })
    .await;
    assert!(eligible, "{:?}", site.health().await);
    failing.store(false, Ordering::SeqCst);
    let before = site.origin.connections();
    let raw_before = site.origin.all_raw().len();

    // The stalled POST: answered 408 before it may become the probe; nothing of it reaches
    // the origin, since it is read in full before admission.
    let (resp, took) = stall_h1(site.gw.addr, 99).await;
    let resp = resp.unwrap_or_else(|e| panic!("stalled POST while probing ({took:?}): {e}"));
    assert_eq!(
        resp.status, 408,
        "stalled POST while probing, {took:?}: {resp:?}"
    );
    assert!(
        took < Duration::from_millis(1900),
        "answered after {took:?}"
    );
    assert!(
        !site.origin.raw_contains(b"POST /upload"),
        "the stalled probe candidate reached the origin: {}",
        site.origin.describe()
    );
    let (state, transitions, _) = site.health().await;
    assert!(
        state == "open" || state == "half_open",
        "after the stalled POST: {state}"
    );

    // A normal GET is admitted as the probe (the stall gave its slot back or never took it)
    // and closes the circuit.
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(get("/probe").as_bytes()).await.unwrap();
    let resp = conn.read_response(ANSWER_LIMIT).await.unwrap();
    assert_eq!(
        resp.status,
        200,
        "the probe after the stalled POST (breaker {state}, {transitions} transitions): \
         {resp:?}\norigin: {}",
        site.origin.describe()
    );
    assert!(resp.header("x-origin-req").is_some(), "{resp:?}");
    let closed = wait_until(ANSWER_LIMIT, || async { site.health().await.0 == "closed" }).await;
    let (state, transitions_closed, _) = site.health().await;
    assert!(closed, "after a good probe the breaker is {state}");
    assert!(
        transitions_closed >= transitions_open + 2,
        "open -> half_open -> closed: {transitions_open} then {transitions_closed}"
    );
    eprintln!(
        "half-open: origin connections {before} -> {}, raw bytes {raw_before} -> {}",
        site.origin.connections(),
        site.origin.all_raw().len()
    );
    conn.send(get("/after-probe").as_bytes()).await.unwrap();
    let resp = conn.read_response(ANSWER_LIMIT).await.unwrap();
    assert_from_origin(&resp, "/after-probe");
}

/// Sends `head` and expects a 502 written by the gateway; then writes `GET /after...` on the
/// same connection and checks it never reached the origin on the connection that answered
/// 101 (it would there if the gateway had spliced the two into a tunnel).
async fn assert_101_refused(site: &Site, head: &str, path: &str, after: &str) {
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(head.as_bytes()).await.expect("send the request");
    let resp = conn
        .read_response(ANSWER_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(
        resp.status, 502,
        "{path}: an unasked-for 101 passed on: {resp:?}"
    );
    assert!(
        resp.header("upgrade").is_none(),
        "{path}: the 502 carries the origin's Upgrade: {resp:?}"
    );
    let upgraded = site
        .origin
        .requests()
        .into_iter()
        .find(|r| r.target == path)
        .unwrap_or_else(|| {
            panic!(
                "{path} never reached the origin: {}",
                site.origin.describe()
            )
        });
    // The client's next bytes: a tunnel would carry them verbatim to the origin's connection.
    let _ = conn.send(get(after).as_bytes()).await;
    let (rest, _) = conn.read_until_closed(Duration::from_millis(800)).await;
    let tunneled = wait_until(Duration::from_millis(500), || async {
        site.origin
            .requests()
            .iter()
            .any(|r| r.target == after && r.conn == upgraded.conn)
    })
    .await;
    assert!(
        !tunneled,
        "{path}: the client's bytes after the 502 reached the origin on the connection that \
         switched protocols: {}",
        site.origin.describe()
    );
    // Whatever the gateway did with the client's next request, it was not a raw pass-through:
    // either nothing (it closed the connection) or a normal proxied answer.
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 "),
        "{path}: after the 502 the client got {text:?}"
    );
    eprintln!(
        "{path}: after the 502, `GET {after}` got {:?}; origin: {}",
        text.lines().next(),
        site.origin.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrequested_101_is_a_502_and_never_a_tunnel() {
    let site = site(30.0, "").await;
    site.origin.reply_for(
        "/ws-plain",
        OriginReply::new(101, "")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade"),
    );
    site.origin.reply_for(
        "/ws-h2c",
        OriginReply::new(101, "")
            .header("Upgrade", "h2c")
            .header("Connection", "Upgrade"),
    );

    // A plain GET, no Upgrade at all.
    assert_101_refused(&site, &get("/ws-plain"), "/ws-plain", "/after-plain").await;

    // A websocket handshake answered with a switch to h2c.
    let ws = "GET /ws-h2c HTTP/1.1\r\nHost: gateway.test\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n";
    assert_101_refused(&site, ws, "/ws-h2c", "/after-h2c").await;
    let seen = site
        .origin
        .requests()
        .into_iter()
        .find(|r| r.target == "/ws-h2c")
        .unwrap();
    assert_eq!(
        seen.header("upgrade"),
        Some("websocket"),
        "the websocket request was forwarded as one: {seen:?}"
    );
    site.assert_h1_serving("/after-101").await;
}
