//! Slowloris and idle-connection exhaustion: request headers trickled a byte at a time (on new
//! and on kept-alive connections), TLS and h2c handshakes that never finish, and the
//! `server.max_connections` cap. Each case measures when the gateway closed the attacking
//! socket, checks that it answered nothing the client did not ask for, and that normal
//! requests are served meanwhile and afterwards.

use crate::harness::{client, wait_until, GatewayProcess, RawConn, RawOrigin, TestDir};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `header_read_timeout_ms` of these gateways (except the connection-cap one).
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// Gap between trickled bytes.
const GAP: Duration = Duration::from_millis(300);
/// A socket still open this long after its first byte was not cut off by the header deadline.
const CLOSE_LIMIT: Duration = Duration::from_secs(3);
/// Closing before this would not be the header deadline at work (1 s minus scheduling slack).
const EARLIEST_CLOSE: Duration = Duration::from_millis(850);

/// `server:` with the harness's private paths, `header_read_timeout_ms`, and `extra` lines.
fn server(header_timeout_ms: u64, extra: &str) -> String {
    format!(
        "server:
  workers: 2
  pid_file: {{dir}}/gw.pid
  upgrade_sock: {{dir}}/upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  header_read_timeout_ms: {header_timeout_ms}
  client_body_timeout_ms: 1000
  keepalive_timeout_seconds: 5
{extra}"
    )
}

/// A gateway with a catch-all route to `origin` on `listeners` (YAML list items).
fn gateway(origin: &RawOrigin, server: &str, listeners: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        "{server}listeners:
{listeners}upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
",
        origin = origin.addr,
    ))
}

/// How one attacking socket ended.
#[derive(Debug)]
struct Ended {
    /// Time from the first byte sent (or from connecting, when nothing is sent) to the close;
    /// `None` if still open at the limit.
    after: Option<Duration>,
    /// Whether the close was a reset (or a failed write) rather than an EOF.
    reset: bool,
    /// What the gateway sent before closing.
    received: Vec<u8>,
    /// Bytes of `bytes` written.
    sent: usize,
}

/// Writes `bytes` one at a time every `gap` (nothing if empty) on `sock`, reading meanwhile,
/// until the gateway closes the socket or `limit` passes since `start`.
async fn trickle(mut sock: TcpStream, bytes: &[u8], gap: Duration, limit: Duration) -> Ended {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(gap);
    let mut buf = [0u8; 4096];
    let mut out = Ended {
        after: None,
        reset: false,
        received: Vec::new(),
        sent: 0,
    };
    loop {
        tokio::select! {
            _ = tick.tick(), if out.sent < bytes.len() => {
                if sock.write_all(&bytes[out.sent..out.sent + 1]).await.is_err() {
                    out.after = Some(start.elapsed());
                    out.reset = true;
                    return out;
                }
                out.sent += 1;
            }
            r = sock.read(&mut buf) => match r {
                Ok(0) => {
                    out.after = Some(start.elapsed());
                    return out;
                }
                Ok(n) => out.received.extend_from_slice(&buf[..n]),
                Err(_) => {
                    out.after = Some(start.elapsed());
                    out.reset = true;
                    return out;
                }
            },
            _ = tokio::time::sleep_until(start + limit) => return out,
        }
    }
}

/// A request header that never ends: a request line, then a header value growing forever.
fn endless_header() -> Vec<u8> {
    let mut h = b"GET /slowloris HTTP/1.1\r\nHost: gateway.test\r\nX-Trickle: ".to_vec();
    h.extend(std::iter::repeat_n(b'a', 64));
    h
}

/// A normal GET through the gateway is answered 200 by the origin.
async fn assert_serving(gw: &GatewayProcess, origin: &RawOrigin, path: &str) {
    let resp = client()
        .get(gw.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status(), 200, "GET {path}");
    assert!(resp.headers().contains_key("x-origin-req"), "GET {path}");
    assert!(origin.saw_target_containing(path), "{}", origin.describe());
}

/// `ended` closed within [EARLIEST_CLOSE, CLOSE_LIMIT), with no full response unless a 408
/// (a gateway may say why it hangs up; it must not answer the partial request otherwise).
fn assert_cut_off(what: &str, ended: &Ended) {
    let after = ended
        .after
        .unwrap_or_else(|| panic!("{what}: still open after {CLOSE_LIMIT:?}: {ended:?}"));
    assert!(
        after >= EARLIEST_CLOSE,
        "{what}: closed after {after:?}, before the {HEADER_TIMEOUT:?} deadline: {ended:?}"
    );
    let text = String::from_utf8_lossy(&ended.received);
    assert!(
        ended.received.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{what}: the gateway answered a partial header with {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_trickled_headers_are_all_cut_off_after_the_header_deadline() {
    const SOCKETS: usize = 200;
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &server(1000, ""), "  - address: \"{listen}\"\n");
    let header: Arc<[u8]> = endless_header().into();
    let mut tasks = Vec::new();
    for _ in 0..SOCKETS {
        let sock = TcpStream::connect(gw.addr).await.expect("connect");
        let header = header.clone();
        tasks.push(tokio::spawn(async move {
            trickle(sock, &header, GAP, CLOSE_LIMIT).await
        }));
    }
    // Served while all 200 trickle.
    assert_serving(&gw, &origin, "/during").await;
    let mut eof = 0;
    let mut reset = 0;
    let mut answered = 0;
    let mut times = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let ended = t.await.unwrap();
        assert_cut_off(&format!("socket {i}"), &ended);
        if ended.reset {
            reset += 1;
        } else {
            eof += 1;
        }
        answered += usize::from(!ended.received.is_empty());
        times.push(ended.after.unwrap());
    }
    times.sort();
    eprintln!(
        "slowloris x{SOCKETS}: {eof} EOF, {reset} reset, {answered} with a 408 first; \
         closed after {:?} (first) .. {:?} (median) .. {:?} (last)",
        times[0],
        times[SOCKETS / 2],
        times[SOCKETS - 1]
    );
    assert!(
        !origin.saw_target_containing("/slowloris"),
        "a trickled header reached the origin: {}",
        origin.describe()
    );
    assert_serving(&gw, &origin, "/after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_second_request_is_cut_off_but_an_idle_keepalive_survives() {
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &server(1000, ""), "  - address: \"{listen}\"\n");

    // Kept-alive, then a second header trickled after some idle time: the deadline runs from
    // its first byte, not from the end of the previous response.
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /first HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn.read_response(Duration::from_secs(3)).await.unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let mut probe = [0u8; 1];
    let idle = tokio::time::timeout(Duration::from_millis(700), conn.stream.read(&mut probe)).await;
    assert!(
        idle.is_err(),
        "kept-alive connection ended while idle: {idle:?}"
    );
    let ended = trickle(conn.stream, &endless_header(), GAP, CLOSE_LIMIT).await;
    assert_cut_off("trickled second request", &ended);
    eprintln!("trickled second request: {ended:?}");
    assert!(
        ended.after.unwrap() < Duration::from_millis(2000),
        "cut off {:?} after its first byte (header_read_timeout_ms 1000)",
        ended.after
    );
    assert!(!origin.saw_target_containing("/slowloris"));

    // An idle kept-alive connection (no bytes at all) lives on past the header deadline: it
    // is governed by keepalive_timeout_seconds (5 s).
    let mut idle_conn = RawConn::connect(gw.addr).await;
    idle_conn
        .send(b"GET /idle-1 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let resp = idle_conn
        .read_response(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let idle = tokio::time::timeout(
        Duration::from_millis(1600),
        idle_conn.stream.read(&mut probe),
    )
    .await;
    assert!(
        idle.is_err(),
        "an idle kept-alive connection was closed: {idle:?}"
    );
    idle_conn
        .send(b"GET /idle-2 HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .expect("the idle connection is still open");
    let resp = idle_conn
        .read_response(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let seen = origin.requests();
    let conn_of = |t: &str| seen.iter().find(|r| r.target == t).map(|r| r.conn);
    assert!(
        conn_of("/idle-1").is_some() && conn_of("/idle-2").is_some(),
        "{}",
        origin.describe()
    );
}

/// A TLS client config trusting exactly `cert` (an rcgen self-signed one), ALPN `h2`.
fn tls_client(cert: &rcgen::CertifiedKey) -> tokio_rustls::TlsConnector {
    use tokio_rustls::rustls::{
        crypto::ring, pki_types::CertificateDer, ClientConfig, RootCertStore,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .expect("trust the test certificate");
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Reads until EOF or an error, up to `limit`; returns when (None if still open), whether it
/// was an error, and the bytes read.
async fn wait_closed<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    start: Instant,
    limit: Duration,
) -> (Option<Duration>, bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let res = tokio::time::timeout(limit.saturating_sub(start.elapsed()), async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return true,
            }
        }
    })
    .await;
    match res {
        Ok(err) => (Some(start.elapsed()), err, got),
        Err(_) => (None, false, got),
    }
}

/// Closed within [EARLIEST_CLOSE, CLOSE_LIMIT) of `start`.
fn assert_closed_in_time(what: &str, closed: Option<Duration>) -> Duration {
    let after = closed.unwrap_or_else(|| panic!("{what}: still open after {CLOSE_LIMIT:?}"));
    assert!(
        after >= EARLIEST_CLOSE,
        "{what}: closed after {after:?}, before the deadline"
    );
    after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_and_h2_prefaces_that_never_come_are_cut_off() {
    let certs = TestDir::new();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = certs.write("cert.pem", &ck.cert.pem());
    let key = certs.write("key.pem", &ck.key_pair.serialize_pem());
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        &server(1000, ""),
        &format!(
            "  - address: \"{{listen}}\"\n    tls: {{ cert: {}, key: {} }}\n",
            cert.display(),
            key.display()
        ),
    );
    let connector = tls_client(&ck);
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();

    // Connects and never sends a ClientHello.
    let silent = async {
        let start = Instant::now();
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        let (after, reset, got) = wait_closed(&mut tcp, start, CLOSE_LIMIT).await;
        (
            assert_closed_in_time("TLS, no ClientHello", after),
            reset,
            got,
        )
    };
    // Completes TLS with ALPN h2, never sends the HTTP/2 preface.
    let no_preface = async {
        let start = Instant::now();
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let mut tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake with the gateway");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN selected h2"
        );
        let handshake = start.elapsed();
        let (after, reset, got) = wait_closed(&mut tls, start, CLOSE_LIMIT).await;
        (
            handshake,
            assert_closed_in_time("TLS + h2, no preface", after),
            reset,
            got.len(),
        )
    };
    let (silent, no_preface) = tokio::join!(silent, no_preface);
    assert!(
        silent.2.is_empty(),
        "the gateway sent {:?} before a ClientHello",
        silent.2
    );
    eprintln!(
        "TLS without ClientHello closed after {:?} (reset {}); TLS h2 without preface: \
         handshake {:?}, closed after {:?} (reset {}, {} bytes of server frames)",
        silent.0, silent.1, no_preface.0, no_preface.1, no_preface.2, no_preface.3
    );
    assert_eq!(origin.count(), 0, "{}", origin.describe());

    // Normal TLS clients are served.
    let https = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", gw.addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = https
        .get(format!("https://localhost:{}/after-tls", gw.addr.port()))
        .send()
        .await
        .expect("a normal TLS request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(origin.saw_target_containing("/after-tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_connections_without_a_full_preface_are_cut_off() {
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        &server(1000, ""),
        "  - address: \"{listen}\"\n    h2c: true\n",
    );
    let attempt = |bytes: &'static [u8]| {
        let addr = gw.addr;
        async move {
            let start = Instant::now();
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(bytes).await.unwrap();
            wait_closed(&mut tcp, start, CLOSE_LIMIT).await
        }
    };
    let (nothing, partial, first_line) = tokio::join!(
        attempt(b""),
        attempt(b"PRI * HTTP/2.0\r\n\r\nSM"),
        attempt(b"PRI * HTTP/2.0\r\n"),
    );
    for (what, (after, reset, got)) in [
        ("h2c, nothing sent", nothing),
        ("h2c, preface cut after SM", partial),
        ("h2c, preface's first line only", first_line),
    ] {
        let after = assert_closed_in_time(what, after);
        eprintln!(
            "{what}: closed after {after:?} (reset {reset}), {} bytes received",
            got.len()
        );
        // A server may send its SETTINGS (or an h1 408/400) before hanging up; never a 200.
        assert!(
            !String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
            "{what}: answered {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    assert_eq!(origin.count(), 0, "{}", origin.describe());
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = h2.get(gw.url("/after-h2c")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert_serving(&gw, &origin, "/after-h1").await;
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

async fn metrics(gw: &GatewayProcess) -> String {
    client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_extra_connection_at_accept() {
    const CAP: usize = 20;
    let origin = RawOrigin::start().await;
    // A long header deadline, so that the idle connections hold their slots for the test.
    let gw = gateway(
        &origin,
        &server(10_000, &format!("  max_connections: {CAP}\n")),
        "  - address: \"{listen}\"\n",
    );
    // The harness's readiness probe (a bare connect) holds a slot until the gateway has seen
    // it close; on a loaded machine that can still be pending here.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metric(&metrics(&gw).await, "avx_connections_open") == Some(0.0)
        })
        .await,
        "the readiness probe's connection was never released"
    );
    let mut idle = Vec::new();
    for _ in 0..CAP {
        idle.push(TcpStream::connect(gw.addr).await.expect("connect"));
    }
    // The kernel completes connects before the gateway accepts; wait until it holds them all.
    // Generous: on a loaded 2-core machine the accepts can lag well behind the connects.
    let held = wait_until(Duration::from_secs(8), || async {
        metric(&metrics(&gw).await, "avx_connections_open") == Some(CAP as f64)
    })
    .await;
    let text = metrics(&gw).await;
    assert!(
        held,
        "avx_connections_open {:?} with {CAP} idle connections",
        metric(&text, "avx_connections_open")
    );
    let rejected_before = metric(&text, "avx_connections_rejected_total").unwrap_or(0.0);

    // The 21st: closed at accept, without a byte of response.
    let start = Instant::now();
    let mut extra = TcpStream::connect(gw.addr)
        .await
        .expect("connect (kernel accept)");
    let (after, reset, got) = wait_closed(&mut extra, start, Duration::from_secs(2)).await;
    let after = after.unwrap_or_else(|| panic!("connection {} was not closed", CAP + 1));
    assert!(
        got.is_empty(),
        "the refused connection got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        after < Duration::from_millis(500),
        "closed only after {after:?}"
    );
    eprintln!(
        "connection {} closed at accept after {after:?} (reset {reset})",
        CAP + 1
    );
    let text = metrics(&gw).await;
    let rejected = metric(&text, "avx_connections_rejected_total");
    assert!(
        rejected.is_some_and(|r| r >= rejected_before + 1.0),
        "avx_connections_rejected_total {rejected:?} (before {rejected_before})"
    );
    assert!(
        metric(&text, "avx_connections_open").is_some_and(|o| o <= CAP as f64),
        "avx_connections_open {:?}",
        metric(&text, "avx_connections_open")
    );
    // The idle ones are all still open: the refusal closed only the extra one.
    for (i, s) in idle.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await;
        assert!(r.is_err(), "idle connection {i} ended: {r:?}");
    }

    // Free five slots: new connections are served again.
    idle.truncate(CAP - 5);
    let freed = wait_until(Duration::from_secs(3), || async {
        metric(&metrics(&gw).await, "avx_connections_open").is_some_and(|o| o <= (CAP - 5) as f64)
    })
    .await;
    assert!(freed, "{}", metrics(&gw).await);
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"GET /after-cap HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
        .await
        .unwrap();
    let resp = conn
        .read_response(Duration::from_secs(3))
        .await
        .expect("served once slots are free");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(origin.saw_target_containing("/after-cap"));
    assert_eq!(origin.count(), 1, "{}", origin.describe());
    drop(idle);
}
