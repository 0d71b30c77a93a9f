//! HTTP/1 request smuggling on raw sockets: ambiguous framing (CL.TE, TE.CL, obfuscated
//! Transfer-Encoding, conflicting Content-Length, bare LF, bad chunk sizes) and CL.0 on every
//! answer the gateway writes itself.
//!
//! Every attack hides [`SMUGGLED`] (`GET /smuggled`) where some parser would read it as a
//! second request; `/smuggled` is routed to the same [`RawOrigin`] as everything else, so a
//! desync anywhere shows up as a parsed `/smuggled` request there. Each case asserts the
//! client's side (one answer, 400 or a close for ambiguous framing, nothing unasked after it)
//! and the origin's side (what it parsed, and that it never saw `/smuggled`), then that the
//! gateway still proxies a normal request.

use super::server_section;
use crate::harness::raw_http::RawResponse;
use crate::harness::{refused_addr, GatewayProcess, OriginReply, RawConn, RawOrigin};
use std::io;
use std::time::Duration;

/// Bound on any single response.
const READ_LIMIT: Duration = Duration::from_secs(3);
/// Bound on the close that must follow a refusal.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);
/// How long an attack connection is watched for bytes nobody asked for. A desynced gateway
/// would answer the smuggled request within milliseconds on loopback.
const QUIET: Duration = Duration::from_millis(300);

/// The request hidden inside bodies.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n";

/// A gateway with a route per kind of answer it writes itself, all in front of one origin.
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    serving_checks: usize,
}

async fn site() -> Site {
    let origin = RawOrigin::start().await;
    origin.reply_for(
        "/cached/",
        OriginReply::new(200, "cacheable\n").header("Cache-Control", "max-age=60"),
    );
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
  broken:
    servers: [{{ address: {dead} }}]
    retries: 0
    passive_health: {{ enabled: false }}
    timeouts: {{ connect_ms: 500 }}
    circuit_breaker: {{ failure_threshold: 1, failure_rate: 0, open_seconds: 30 }}
routes:
  - {{ name: smuggled, match: {{ path_prefix: /smuggled }}, upstream: origin }}
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: origin
    rate_limit: {{ requests_per_second: 1, burst: 0 }}
  - name: fixed
    match: {{ path_prefix: /fixed }}
    respond: {{ status: 403, body: "no" }}
  - {{ name: broken, match: {{ path_prefix: /broken }}, upstream: broken }}
  - name: cached
    match: {{ path_prefix: /cached/ }}
    upstream: origin
    cache: {{ enabled: true }}
  - {{ name: api, match: {{ path_prefix: /api/ }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
        dead = refused_addr(0),
    ));
    Site {
        gw,
        origin,
        serving_checks: 0,
    }
}

impl Site {
    /// The origin never parsed a `/smuggled` request, and everything it could not parse is a
    /// request the gateway abandoned midway (never framing it considers invalid).
    fn assert_clean(&self, what: &str) {
        assert!(
            !self.origin.saw_target_containing("/smuggled"),
            "{what}: the smuggled request reached the origin: {}",
            self.origin.describe()
        );
        for m in self.origin.malformed() {
            assert_eq!(
                m.reason,
                "connection closed inside a request",
                "{what}: the gateway forwarded framing the origin refuses: {}",
                self.origin.describe()
            );
        }
    }

    /// The gateway is alive and proxies a normal request on a fresh connection.
    async fn assert_serving(&mut self, what: &str) {
        assert!(
            self.gw.is_running(),
            "{what}: gateway died:\n{}",
            self.gw.log()
        );
        self.serving_checks += 1;
        let path = format!("/api/after-{}", self.serving_checks);
        let mut conn = RawConn::connect(self.gw.addr).await;
        conn.send(get(&path).as_bytes())
            .await
            .expect("send a normal request");
        let resp = conn
            .read_response(READ_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{what}: a normal request afterwards: {e}"));
        assert_from_origin(&self.origin, &resp, &path, what);
    }
}

/// A plain GET.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
}

/// `resp` is the origin's 200 to a request for `path`.
fn assert_from_origin(origin: &RawOrigin, resp: &RawResponse, path: &str, what: &str) {
    assert_eq!(
        resp.status, 200,
        "{what}: GET {path} answered {:?}",
        resp.status_line
    );
    let seq: usize = resp
        .header("x-origin-req")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{what}: GET {path} was not answered by the origin"));
    let seen = origin.requests();
    let req = seen
        .iter()
        .find(|r| r.seq == seq)
        .unwrap_or_else(|| panic!("{what}: origin has no request #{seq}"));
    assert_eq!(
        req.target,
        path,
        "{what}: the response to GET {path} answered another request: {}",
        origin.describe()
    );
}

/// How an attack may end.
#[derive(Clone, Debug)]
enum Expect {
    /// 400, or a close without an answer; the connection closes; the origin parses nothing.
    Refused,
    /// Proxied as one request to `/api/...` with exactly this body (an unambiguous request).
    Proxied(Vec<u8>),
    /// Either of the above: the RFCs let a recipient refuse or accept this form.
    Either(Vec<u8>),
}

struct Attack {
    name: String,
    raw: Vec<u8>,
    expect: Expect,
}

fn attack(name: &str, raw: impl Into<Vec<u8>>, expect: Expect) -> Attack {
    Attack {
        name: name.to_string(),
        raw: raw.into(),
        expect,
    }
}

/// Whether a failed read means the gateway closed (rather than went quiet).
fn is_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Sends one attack on a fresh connection and checks both ends (see [`Expect`]).
async fn run(site: &mut Site, a: &Attack) {
    let what = a.name.as_str();
    let before = site.origin.count();
    let mut conn = RawConn::connect(site.gw.addr).await;
    // The gateway may refuse and close before the client has finished writing.
    let _ = conn.send(&a.raw).await;
    let first = conn.read_response(READ_LIMIT).await;
    let proxied = match &first {
        Ok(r) if r.status == 400 => false,
        Ok(r) if r.status == 200 => true,
        Ok(r) => panic!(
            "{what}: answered {:?} (body {:?}); origin: {}",
            r.status_line,
            String::from_utf8_lossy(&r.body),
            site.origin.describe()
        ),
        Err(e) if is_close(e) => false,
        Err(e) => panic!("{what}: no answer and no close: {e}"),
    };
    match (&a.expect, proxied) {
        (Expect::Refused, false) | (Expect::Either(_), false) => {
            let (rest, closed) = conn.read_until_closed(CLOSE_LIMIT).await;
            assert!(
                closed,
                "{what}: the connection stayed open after a refusal: {:?}",
                String::from_utf8_lossy(&rest)
            );
            assert!(
                rest.is_empty(),
                "{what}: more bytes after the refusal: {:?}",
                String::from_utf8_lossy(&rest)
            );
            assert_eq!(
                site.origin.count(),
                before,
                "{what}: a refused request reached the origin: {}",
                site.origin.describe()
            );
        }
        (Expect::Proxied(body), true) | (Expect::Either(body), true) => {
            let resp = first.expect("checked above");
            let seen = site.origin.requests();
            assert_eq!(
                seen.len(),
                before + 1,
                "{what}: the origin did not get exactly one request: {}",
                site.origin.describe()
            );
            let req = &seen[before];
            assert!(
                req.target.starts_with("/api/"),
                "{what}: origin got {:?}",
                req.target
            );
            assert_eq!(
                String::from_utf8_lossy(&req.body),
                String::from_utf8_lossy(body),
                "{what}: the origin got another body"
            );
            assert_from_origin(&site.origin, &resp, &req.target.clone(), what);
            let (rest, closed) = conn.read_until_closed(QUIET).await;
            assert!(
                rest.is_empty(),
                "{what}: bytes nobody asked for after the answer: {:?}",
                String::from_utf8_lossy(&rest)
            );
            if !closed {
                // The connection is still in sync: its next request gets its own answer.
                let path = format!("/api/next-{}", site.origin.count());
                conn.send(get(&path).as_bytes())
                    .await
                    .expect("send on the kept connection");
                let next = conn
                    .read_response(READ_LIMIT)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: next request on the connection: {e}"));
                assert_from_origin(&site.origin, &next, &path, what);
            }
        }
        (Expect::Refused, true) => panic!(
            "{what}: an ambiguous request was proxied; origin: {}",
            site.origin.describe()
        ),
        (Expect::Proxied(_), false) => panic!(
            "{what}: an unambiguous request was refused ({:?})",
            first.map(|r| r.status_line)
        ),
    }
    site.assert_clean(what);
    site.assert_serving(what).await;
    site.assert_clean(what);
}

async fn run_all(attacks: &[Attack]) {
    let mut site = site().await;
    for a in attacks {
        run(&mut site, a).await;
    }
}

/// `POST` with these header lines (each ending in CRLF or as written) and body.
fn post(path: &str, version: &str, header_lines: &str, body: &str) -> String {
    format!("POST {path} {version}\r\nHost: gateway.test\r\n{header_lines}\r\n{body}")
}

/// A body that ends after `0\r\n\r\n` when read as chunked; [`SMUGGLED`] follows.
fn chunked_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

/// A body that is one chunk holding [`SMUGGLED`] when read as chunked; its first line is
/// returned apart, as a short Content-Length covers only it.
fn smuggled_in_a_chunk() -> (String, String) {
    let size_line = format!("{:x}\r\n", SMUGGLED.len());
    (
        size_line.clone(),
        format!("{size_line}{SMUGGLED}\r\n0\r\n\r\n"),
    )
}

/// Both desync shapes for one way of writing Transfer-Encoding (`te_lines`, CRLF-terminated):
/// CL.TE (Content-Length covers the whole body, chunked ends early) and TE.CL (chunked covers
/// it, a short Content-Length ends early).
fn te_pair(name: &str, te_lines: &str) -> [Attack; 2] {
    let clte = chunked_then_smuggled();
    let (size_line, tecl) = smuggled_in_a_chunk();
    [
        attack(
            &format!("CL.TE with {name}"),
            post(
                "/api/clte",
                "HTTP/1.1",
                &format!("Content-Length: {}\r\n{te_lines}", clte.len()),
                &clte,
            ),
            Expect::Refused,
        ),
        attack(
            &format!("TE.CL with {name}"),
            post(
                "/api/tecl",
                "HTTP/1.1",
                &format!("{te_lines}Content-Length: {}\r\n", size_line.len()),
                &tecl,
            ),
            Expect::Refused,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_and_te_cl_are_refused() {
    let mut attacks: Vec<Attack> = te_pair(
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\n",
    )
    .into();
    attacks.extend(te_pair(
        "Transfer-Encoding: Chunked",
        "Transfer-Encoding: Chunked\r\n",
    ));
    run_all(&attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_is_refused() {
    let variants: &[(&str, &str)] = &[
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        ("a quoted \"chunked\"", "Transfer-Encoding: \"chunked\"\r\n"),
        ("extra leading spaces", "Transfer-Encoding:   chunked\r\n"),
        ("a leading tab", "Transfer-Encoding:\tchunked\r\n"),
        (
            "`chunked, identity`",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        (
            "`identity, chunked`",
            "Transfer-Encoding: identity, chunked\r\n",
        ),
        (
            "two lines, chunked first",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
        ),
        (
            "two lines, chunked last",
            "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "a space before the colon",
            "Transfer-Encoding : chunked\r\n",
        ),
        (
            "a \\x0b before the value",
            "Transfer-Encoding:\x0bchunked\r\n",
        ),
        (
            "a \\x0b after the value",
            "Transfer-Encoding: chunked\x0b\r\n",
        ),
        ("a \\x0c in the name", "Transfer-Encoding\x0c: chunked\r\n"),
        (
            "the value on an obs-fold line",
            "Transfer-Encoding: identity\r\n chunked\r\n",
        ),
        (
            "the whole field on an obs-fold line",
            "X-Pad: x\r\n\tTransfer-Encoding: chunked\r\n",
        ),
        ("a NUL in the value", "Transfer-Encoding: chunked\x00\r\n"),
    ];
    let mut attacks: Vec<Attack> = variants
        .iter()
        .flat_map(|(name, lines)| te_pair(name, lines))
        .collect();
    // RFC 9112 section 6.1: Transfer-Encoding on HTTP/1.0 is faulty framing, with or without
    // a Content-Length. A 1.0 parser ignoring TE reads an empty body and then `0\r\n\r\n...`.
    let body = chunked_then_smuggled();
    attacks.push(attack(
        "Transfer-Encoding on HTTP/1.0",
        post(
            "/api/te10",
            "HTTP/1.0",
            "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
            &body,
        ),
        Expect::Refused,
    ));
    attacks.push(attack(
        "Transfer-Encoding and Content-Length on HTTP/1.0",
        post(
            "/api/te10",
            "HTTP/1.0",
            &format!(
                "Connection: keep-alive\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                body.len()
            ),
            &body,
        ),
        Expect::Refused,
    ));
    run_all(&attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_or_invalid_content_length_is_refused() {
    // Every body is exactly SMUGGLED: a reader taking another length than its size either
    // reads SMUGGLED as the next request or swallows part of it.
    let n = SMUGGLED.len();
    let refused: Vec<(&str, String)> = vec![
        (
            "two different values",
            format!("Content-Length: 5\r\nContent-Length: {n}\r\n"),
        ),
        (
            "two different values, reversed",
            format!("Content-Length: {n}\r\nContent-Length: 5\r\n"),
        ),
        (
            "a comma list of different values",
            format!("Content-Length: 5, {n}\r\n"),
        ),
        ("an empty list element", format!("Content-Length: {n},\r\n")),
        ("a plus sign", format!("Content-Length: +{n}\r\n")),
        ("a negative value", "Content-Length: -1\r\n".into()),
        (
            "a value past u64",
            "Content-Length: 99999999999999999999999\r\n".into(),
        ),
        ("a hex value", format!("Content-Length: 0x{n:x}\r\n")),
        (
            "two numbers in one value",
            format!("Content-Length: {n} 5\r\n"),
        ),
        (
            "a space before the colon",
            format!("Content-Length : {n}\r\n"),
        ),
        (
            "a \\x0b before the value",
            format!("Content-Length:\x0b{n}\r\n"),
        ),
        ("an empty value", "Content-Length: \r\n".into()),
    ];
    let mut attacks: Vec<Attack> = refused
        .into_iter()
        .map(|(name, lines)| {
            attack(
                &format!("Content-Length with {name}"),
                post("/api/cl", "HTTP/1.1", &lines, SMUGGLED),
                Expect::Refused,
            )
        })
        .collect();
    // RFC 9110 section 8.6 lets a recipient accept identical duplicates as one value; then
    // SMUGGLED is body, and the origin must get it as body of one request.
    for (name, lines) in [
        (
            "an identical duplicate",
            format!("Content-Length: {n}\r\nContent-Length: {n}\r\n"),
        ),
        (
            "an identical comma list",
            format!("Content-Length: {n}, {n}\r\n"),
        ),
        ("leading zeros", format!("Content-Length: 000{n}\r\n")),
    ] {
        attacks.push(attack(
            &format!("Content-Length with {name}"),
            post("/api/cl", "HTTP/1.1", &lines, SMUGGLED),
            Expect::Either(SMUGGLED.into()),
        ));
    }
    run_all(&attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_and_cr_do_not_split_or_hide_framing() {
    let n = SMUGGLED.len();
    let clte = chunked_then_smuggled();
    let (size_line, tecl) = smuggled_in_a_chunk();
    let attacks = [
        // RFC 9112 section 2.2 lets a recipient take a bare LF as a line end; the body is
        // SMUGGLED either way and must reach the origin as body.
        attack(
            "a request with bare LF line ends",
            format!("POST /api/lf HTTP/1.1\nHost: gateway.test\nContent-Length: {n}\n\n{SMUGGLED}"),
            Expect::Either(SMUGGLED.into()),
        ),
        // A CRLF-only reader sees one header `X-Pad: a\nTransfer-Encoding: chunked`.
        attack(
            "Transfer-Encoding behind a bare LF (CL.TE)",
            format!(
                "POST /api/lf HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\nX-Pad: a\nTransfer-Encoding: chunked\r\n\r\n{clte}",
                clte.len()
            ),
            Expect::Refused,
        ),
        attack(
            "Content-Length behind a bare LF (TE.CL)",
            format!(
                "POST /api/lf HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\nX-Pad: a\nContent-Length: {}\r\n\r\n{tecl}",
                size_line.len()
            ),
            Expect::Refused,
        ),
        attack(
            "Transfer-Encoding behind a bare CR",
            format!(
                "POST /api/cr HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\nX-Pad: a\rTransfer-Encoding: chunked\r\n\r\n{clte}",
                clte.len()
            ),
            Expect::Refused,
        ),
        attack(
            "a bare LF ending the header section",
            format!(
                "POST /api/lf HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {n}\r\n\n{SMUGGLED}"
            ),
            Expect::Either(SMUGGLED.into()),
        ),
        attack(
            "chunk lines ended by bare LF",
            "POST /api/lfchunk HTTP/1.1\r\nHost: gateway.test\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
            Expect::Either(b"hello".to_vec()),
        ),
    ];
    run_all(&attacks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sizes_and_extensions_are_refused() {
    let chunked = |name: &str, body: &str, expect: Expect| {
        attack(
            name,
            post(
                "/api/chunks",
                "HTTP/1.1",
                "Transfer-Encoding: chunked\r\n",
                body,
            ),
            expect,
        )
    };
    let attacks = [
        // Positive control: a valid extension is ignored and the body proxied.
        chunked(
            "a valid chunk extension",
            "5;name=value\r\nhello\r\n0\r\n\r\n",
            Expect::Proxied(b"hello".to_vec()),
        ),
        chunked(
            "a chunk size past u64 (FFFFFFFFFFFFFFFFF1)",
            &format!("FFFFFFFFFFFFFFFFF1\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            Expect::Refused,
        ),
        // 2^64: a parser that wraps reads a last chunk, then SMUGGLED as the next request.
        chunked(
            "a chunk size wrapping to zero (10000000000000000)",
            &format!("10000000000000000\r\n\r\n{SMUGGLED}"),
            Expect::Refused,
        ),
        chunked(
            "a non-hex chunk size",
            &format!("zz\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            Expect::Refused,
        ),
        chunked(
            "a negative chunk size",
            &format!("-1\r\n\r\n{SMUGGLED}"),
            Expect::Refused,
        ),
        chunked(
            "a 0x-prefixed chunk size",
            &format!("0x{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            Expect::Refused,
        ),
        chunked(
            "an empty chunk size",
            &format!("\r\n{SMUGGLED}\r\n0\r\n\r\n"),
            Expect::Refused,
        ),
        chunked(
            "chunk data longer than its size",
            &format!("2\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
            Expect::Refused,
        ),
        chunked(
            "chunk data shorter than its size",
            &format!("5\r\nhel\r\n0\r\n\r\n{SMUGGLED}"),
            Expect::Refused,
        ),
        // A reader ending the size line at the bare LF reads the chunk as `b\r\nhe`.
        chunked(
            "a bare LF inside a chunk extension",
            "5;a\nb\r\nhello\r\n0\r\n\r\n",
            Expect::Either(b"hello".to_vec()),
        ),
        chunked(
            "a NUL in a chunk extension",
            "5;a=\x00\r\nhello\r\n0\r\n\r\n",
            Expect::Either(b"hello".to_vec()),
        ),
        chunked(
            "a quoted CRLF in a chunk extension",
            &format!("5;a=\"\r\n{SMUGGLED}\"\r\nhello\r\n0\r\n\r\n"),
            Expect::Refused,
        ),
    ];
    run_all(&attacks).await;
}

/// Sends a request whose `Content-Length` body is exactly [`SMUGGLED`] (CL.0: a parser that
/// ignores the body reads it as the next request); the gateway answers it itself with
/// `status`. Checks that exactly one answer arrives, that nothing arrives unasked, that a
/// kept connection then serves its next request correctly, and that the origin never sees
/// `/smuggled`. Returns the answer.
async fn cl0(site: &mut Site, method_and_path: &str, status: u16) -> RawResponse {
    let what = format!("CL.0 on {method_and_path}");
    let before = site.origin.count();
    let raw = format!(
        "{method_and_path} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(raw.as_bytes()).await.expect("send the request");
    let resp = conn
        .read_response(READ_LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
    assert_eq!(
        resp.status,
        status,
        "{what}: answered {:?} (body {:?})",
        resp.status_line,
        String::from_utf8_lossy(&resp.body)
    );
    let (rest, closed) = conn.read_until_closed(QUIET).await;
    assert!(
        rest.is_empty(),
        "{what}: bytes nobody asked for (an answer to the body?): {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        site.origin.count(),
        before,
        "{what}: the origin got a request: {}",
        site.origin.describe()
    );
    if !closed {
        let path = format!("/api/after-cl0-{}", before);
        conn.send(get(&path).as_bytes())
            .await
            .expect("send on the kept connection");
        let next = conn
            .read_response(READ_LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{what}: next request on the kept connection: {e}"));
        assert_from_origin(&site.origin, &next, &path, &what);
    }
    assert!(
        !site.origin.raw_contains(b"/smuggled"),
        "{what}: the body reached the origin: {}",
        site.origin.describe()
    );
    site.assert_clean(&what);
    site.assert_serving(&what).await;
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_404_for_no_route() {
    let mut site = site().await;
    let resp = cl0(&mut site, "POST /nowhere", 404).await;
    assert_eq!(String::from_utf8_lossy(&resp.body), "no route\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_405_for_purge() {
    let mut site = site().await;
    let resp = cl0(&mut site, "PURGE /api/item", 405).await;
    assert_eq!(String::from_utf8_lossy(&resp.body), "method not allowed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_429_from_the_rate_limit() {
    let mut site = site().await;
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(get("/limited/first").as_bytes()).await.unwrap();
    let first = conn.read_response(READ_LIMIT).await.unwrap();
    assert_from_origin(
        &site.origin,
        &first,
        "/limited/first",
        "the admitted request",
    );
    // burst 0 at 1 request per second: the next request within the second is refused.
    let resp = cl0(&mut site, "POST /limited/second", 429).await;
    assert!(resp.header("retry-after").is_some(), "{:?}", resp.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_respond_route() {
    let mut site = site().await;
    let resp = cl0(&mut site, "POST /fixed/x", 403).await;
    assert_eq!(resp.body, b"no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_503_from_an_open_circuit() {
    let mut site = site().await;
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(get("/broken/first").as_bytes()).await.unwrap();
    let first = conn.read_response(READ_LIMIT).await.unwrap();
    assert_eq!(
        first.status, 502,
        "the refused connect: {:?}",
        first.status_line
    );
    // failure_threshold 1: that failure opened the circuit for 30 s.
    let resp = cl0(&mut site, "POST /broken/second", 503).await;
    assert_eq!(
        String::from_utf8_lossy(&resp.body),
        "upstream circuit open\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl0_on_a_cached_route_bypasses_the_cache_and_keeps_framing() {
    let mut site = site().await;
    let path = "/cached/item";
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(get(path).as_bytes()).await.unwrap();
    let miss = conn.read_response(READ_LIMIT).await.unwrap();
    assert_from_origin(&site.origin, &miss, path, "the filling request");
    // The entry is stored once the first response has been written; poll until it serves.
    let origin = &site.origin;
    let gw = &site.gw;
    let hit = crate::harness::wait_until(Duration::from_secs(3), || async {
        let mut c = RawConn::connect(gw.addr).await;
        c.send(get(path).as_bytes()).await.is_ok()
            && c.read_response(READ_LIMIT)
                .await
                .is_ok_and(|r| r.header("x-cache-status") == Some("HIT"))
    })
    .await;
    assert!(hit, "no cache HIT for {path}: {}", origin.describe());
    // A GET whose body is a whole request: a request with a body never uses the cache (its
    // body is not in the key), so it is not answered from the entry: it goes to the origin
    // with its body as a body, and nothing in it becomes a request of its own.
    let before = site.origin.count();
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let mut conn = RawConn::connect(site.gw.addr).await;
    conn.send(raw.as_bytes()).await.expect("send the request");
    let resp = conn.read_response(READ_LIMIT).await.expect("an answer");
    assert_eq!(resp.status, 200, "{:?}", resp.status_line);
    assert_eq!(
        resp.header("x-cache-status"),
        Some("BYPASS"),
        "{:?}",
        resp.headers
    );
    let (rest, _) = conn.read_until_closed(QUIET).await;
    assert!(
        rest.is_empty(),
        "bytes nobody asked for: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let seen = site.origin.requests();
    assert_eq!(seen.len(), before + 1, "{}", site.origin.describe());
    assert_eq!(seen[before].target, path);
    assert_eq!(
        seen[before].body,
        SMUGGLED.as_bytes(),
        "the body went on as a body"
    );
    assert!(
        !site
            .origin
            .targets()
            .iter()
            .any(|t| t.contains("/smuggled")),
        "the body became a request: {}",
        site.origin.describe()
    );
    site.assert_serving("after the GET with a body").await;
}

/// H2.CL: an HTTP/2 request whose `content-length` disagrees with its DATA (shorter, longer,
/// `0` with a whole request as the data, in one frame or split so that part of the body was
/// already accepted) is a stream error (RST_STREAM `PROTOCOL_ERROR`). The data past the
/// declared length never reaches the origin, so the request hidden in it never becomes one;
/// the origin parses at most what a header declared complete (`content-length: 0`), and any
/// upstream connection left inside a request is closed. The h2 connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_content_length_that_disagrees_with_the_data_is_a_stream_error() {
    use crate::harness::h2_frames::{code, frames};
    use crate::harness::H2Client;
    let origin = RawOrigin::start().await;
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
    h2c: true
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - {{ name: all, match: {{ path_prefix: / }}, upstream: origin }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    let long = format!("hello{SMUGGLED}");
    let cases: [(&str, &str, Vec<&[u8]>); 5] = [
        ("/api/h2cl-zero", "0", vec![SMUGGLED.as_bytes()]),
        ("/api/h2cl-longer", "5", vec![long.as_bytes()]),
        ("/api/h2cl-shorter", "10", vec![b"hello"]),
        ("/api/h2cl-shorter-split", "10", vec![b"hello", b""]),
        (
            "/api/h2cl-longer-split",
            "5",
            vec![b"hel", &long.as_bytes()[3..]],
        ),
    ];
    let mut c = H2Client::connect_h2c(gw.addr).await.expect("h2c connect");
    c.wait_settings(READ_LIMIT).await.expect("SETTINGS");
    for (path, length, data) in &cases {
        let id = c.next_stream_id();
        let block = c.request_block("POST", path, &[("content-length", length)]);
        c.send(&frames::headers(id, &block, false, true))
            .await
            .expect("HEADERS");
        let last = data.len() - 1;
        for (i, d) in data.iter().enumerate() {
            // The stream may already be reset; the connection is what must survive.
            let _ = c.send(&frames::data(id, d, i == last)).await;
        }
        let out = c.read_stream(id, READ_LIMIT).await;
        assert_eq!(
            (out.status, out.reset),
            (None, Some(code::PROTOCOL_ERROR)),
            "{path} (content-length {length}): {out:?}; origin: {}",
            origin.describe()
        );
        assert!(out.goaway.is_none() && !out.closed, "{path}: {out:?}");
    }
    assert!(
        origin.wait_all_closed(Duration::from_secs(3)).await,
        "an upstream connection holding a broken request stayed open: {}",
        origin.describe()
    );
    // Bodies are streamed, so the request header may have gone upstream before the DATA
    // that broke it: a declared length above 0 then leaves the origin an incomplete request
    // (its connection closed, below), and `content-length: 0` the complete, empty-bodied
    // request its header declared. Never the data past the declared length.
    for r in origin.requests() {
        assert_eq!(
            (r.target.as_str(), r.body.as_slice()),
            ("/api/h2cl-zero", &b""[..]),
            "the origin parsed a request the client never completed: {}",
            origin.describe()
        );
        assert_eq!(r.header_all("content-length"), vec!["0"]);
    }
    let before_right = origin.count();
    for m in origin.malformed() {
        assert_eq!(
            m.reason,
            "connection closed inside a request",
            "{}",
            origin.describe()
        );
    }
    assert!(
        !origin.raw_contains(b"/smuggled"),
        "the hidden request's bytes reached the origin: {:?}",
        String::from_utf8_lossy(&origin.all_raw())
    );
    // The same h2 connection still proxies a request whose length is right.
    let id = c.next_stream_id();
    let block = c.request_block("POST", "/api/h2cl-right", &[("content-length", "5")]);
    c.send(&frames::headers(id, &block, false, true))
        .await
        .expect("HEADERS");
    c.send(&frames::data(id, b"hello", true))
        .await
        .expect("DATA");
    let out = c.read_stream(id, READ_LIMIT).await;
    assert_eq!(
        out.status,
        Some(200),
        "{out:?}; origin: {}",
        origin.describe()
    );
    let seen = origin.requests();
    assert_eq!(seen.len(), before_right + 1, "{}", origin.describe());
    let right = &seen[before_right];
    assert_eq!(
        (right.target.as_str(), right.body.as_slice()),
        ("/api/h2cl-right", &b"hello"[..])
    );
    assert_eq!(right.header_all("content-length"), vec!["5"]);
}
