//! Web cache poisoning and cache safety on raw sockets: unkeyed inputs that an origin reflects
//! (forwarding and override headers, cookies, bodies, queries, odd targets), the parts of
//! the key (scheme, effective host), invalidation by unsafe methods, RFC 9213 targeted
//! cache-control fields, invalid `Age`, and the origin's `Date` on hits.
//!
//! The [`RawOrigin`] reflects into every body what it received (method, target, body length
//! and the headers in [`ECHOED`]) and marks it `Cache-Control: max-age=60` unless the path
//! asks for other response headers (see [`reply`]). A poisoning attempt is sent first, then a
//! clean request for the same URL, which must get the answer to a clean request; each case
//! says which mechanism protected it: the input was stripped before the origin (the poisoned
//! request was stored, harmlessly, and the clean one is a HIT of it), or the poisoned request
//! bypassed the cache (`X-Cache-Status: BYPASS`).

use super::server_section;
use crate::harness::raw_http::RawResponse;
use crate::harness::raw_origin::SeenRequest;
use crate::harness::{free_addr, http_date, wait_until, GatewayProcess, OriginReply, RawConn};
use crate::harness::{RawOrigin, TestDir};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Bound on any single response.
const READ_LIMIT: Duration = Duration::from_secs(3);
/// The site's host.
const HOST: &str = "site.test";
/// The trusted proxy of [`site_with`]`("trusted_proxies: [127.0.0.2]")`: loopback, but
/// another peer than the plain clients' `127.0.0.1`.
const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Request headers the origin copies into its body, in this order.
const ECHOED: [&str; 13] = [
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "forwarded",
    "x-real-ip",
    "cookie",
];

/// The origin's body for a request: everything about it that an origin might reflect.
fn echo(r: &SeenRequest) -> String {
    let mut s = format!("{} {} body={}\n", r.method, r.target, r.body.len());
    for name in ECHOED {
        for v in r.header_all(name) {
            s.push_str(&format!("{name}: {v}\n"));
        }
    }
    s
}

/// The body a clean `GET target` with `Host: host` through the cleartext listener on `port`
/// gets: the gateway's own forwarding headers and nothing else.
fn clean_body(target: &str, host: &str, port: u16) -> String {
    format!(
        "GET {target} body=0\nx-forwarded-host: {host}\nx-forwarded-port: {port}\nx-forwarded-proto: http\n"
    )
}

/// The origin's reply; the path picks the response headers.
fn reply(r: &SeenRequest) -> OriginReply {
    let body = echo(r);
    if r.method != "GET" && r.method != "HEAD" {
        return OriginReply::new(200, "done\n");
    }
    let p = r.path();
    let ok = OriginReply::new(200, body);
    if p.starts_with("/etag/") {
        // A validator and no explicit lifetime: cacheable only through default_ttl_seconds.
        ok.header("ETag", "\"v1\"")
    } else if p.starts_with("/public/") {
        ok.header("Cache-Control", "public, max-age=60")
    } else if p.starts_with("/redirect")
        || p.starts_with("/vary-proto/")
        || p.starts_with("/keyed-proto/")
    {
        // An origin behind a TLS-terminating proxy: it redirects what the proxy says came in
        // over http. Under `/vary-proto/` it also says so in `Vary`.
        let reply = if r.header("x-forwarded-proto") == Some("https") {
            OriginReply::new(200, "secure\n").header("Cache-Control", "max-age=60")
        } else {
            OriginReply::new(301, "")
                .header("Location", &format!("https://{HOST}{}", r.target))
                .header("Cache-Control", "max-age=60")
        };
        if p.starts_with("/vary-proto/") {
            reply.header("Vary", "X-Forwarded-Proto")
        } else {
            reply
        }
    } else if p.starts_with("/cdn/") {
        ok.header("Cache-Control", "no-store")
            .header("CDN-Cache-Control", "max-age=60")
    } else if p.starts_with("/avx/") {
        ok.header("AVX-Cache-Control", "no-store")
            .header("Cache-Control", "max-age=60")
    } else if p.starts_with("/age-abc/") {
        ok.header("Cache-Control", "max-age=60")
            .header("Age", "abc")
    } else if p.starts_with("/age-list/") {
        ok.header("Cache-Control", "max-age=60")
            .header("Age", "1, 2")
    } else if p.starts_with("/dated/") {
        let date = http_date(SystemTime::now() - Duration::from_secs(60));
        ok.header("Cache-Control", "max-age=600")
            .header("Date", &date)
            .header("X-Sent-Date", &date)
    } else {
        ok.header("Cache-Control", "max-age=60")
    }
}

/// A gateway with a cleartext and a TLS listener, caching routes in front of the echoing
/// origin:
/// - `/iq`: `key.ignore_query`;
/// - `/keyed-proto`: `key.include_headers: [X-Forwarded-Proto]`;
/// - `/etag`: `default_ttl_seconds: 60`;
/// - `/ignore-cookies`: `cookies: ignore`;
/// - `/keep`: `invalidate_on_unsafe: false`;
/// - everything else: `cache: { enabled: true }`.
struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    tls_addr: SocketAddr,
    _certs: TestDir,
}

async fn site() -> Site {
    site_with("").await
}

/// [`site`] with `top` (top-level YAML lines, e.g. `trusted_proxies: [127.0.0.2]\n`).
async fn site_with(top: &str) -> Site {
    let origin = RawOrigin::start_with(reply).await;
    let certs = TestDir::new();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), HOST.into()]).unwrap();
    let cert = certs.write("cert.pem", &ck.cert.pem());
    let key = certs.write("key.pem", &ck.key_pair.serialize_pem());
    let tls_addr = free_addr();
    let gw = GatewayProcess::start(&format!(
        r#"{server}{top}listeners:
  - address: {{listen}}
  - address: {tls_addr}
    tls: {{ cert: {cert}, key: {key} }}
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - name: iq
    match: {{ path_prefix: /iq }}
    upstream: origin
    cache: {{ enabled: true, key: {{ ignore_query: true }} }}
  - name: etag
    match: {{ path_prefix: /etag }}
    upstream: origin
    cache: {{ enabled: true, default_ttl_seconds: 60 }}
  - name: ignore-cookies
    match: {{ path_prefix: /ignore-cookies }}
    upstream: origin
    cache: {{ enabled: true, cookies: ignore }}
  - name: keep
    match: {{ path_prefix: /keep }}
    upstream: origin
    cache: {{ enabled: true, invalidate_on_unsafe: false }}
  - name: keyed-proto
    match: {{ path_prefix: /keyed-proto }}
    upstream: origin
    cache: {{ enabled: true, key: {{ include_headers: [X-Forwarded-Proto] }} }}
  - name: all
    match: {{ path_prefix: / }}
    upstream: origin
    cache: {{ enabled: true }}
"#,
        server = server_section(),
        origin = origin.addr,
        cert = cert.display(),
        key = key.display(),
    ));
    Site {
        gw,
        origin,
        tls_addr,
        _certs: certs,
    }
}

/// One request as written on the wire.
struct Req<'a> {
    method: &'a str,
    target: &'a str,
    host: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
    /// The client's local address; `None` is the default (`127.0.0.1`).
    from: Option<IpAddr>,
}

fn get(target: &str) -> Req<'_> {
    Req {
        method: "GET",
        target,
        host: HOST,
        headers: Vec::new(),
        body: "",
        from: None,
    }
}

impl<'a> Req<'a> {
    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn host(mut self, host: &'a str) -> Self {
        self.host = host;
        self
    }

    /// Sent from the trusted proxy's address, [`PROXY`].
    fn via_proxy(mut self) -> Self {
        self.from = Some(PROXY);
        self
    }
}

/// The `X-Cache-Status` of a response (empty when absent).
fn status_of(r: &RawResponse) -> &str {
    r.header("x-cache-status").unwrap_or("")
}

fn text(r: &RawResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

impl Site {
    /// Sends `req` on a fresh cleartext connection and reads the response.
    async fn send(&self, req: Req<'_>) -> RawResponse {
        let mut raw = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            req.method, req.target, req.host
        );
        for (k, v) in &req.headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        if !req.body.is_empty() || req.method != "GET" {
            raw.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
        }
        raw.push_str("\r\n");
        raw.push_str(req.body);
        let mut conn = match req.from {
            Some(ip) => RawConn::connect_from(ip, self.gw.addr).await,
            None => RawConn::connect(self.gw.addr).await,
        };
        let _ = conn.send(raw.as_bytes()).await;
        conn.read_response(READ_LIMIT).await.unwrap_or_else(|e| {
            panic!(
                "{} {}: {e}; origin: {}",
                req.method,
                req.target,
                self.origin.describe()
            )
        })
    }

    /// The request the origin answered with `resp` (by its `X-Origin-Req`).
    fn seen_for(&self, resp: &RawResponse) -> Option<SeenRequest> {
        let n: usize = resp.header("x-origin-req")?.parse().ok()?;
        self.origin.requests().into_iter().find(|r| r.seq == n)
    }

    /// `GET target` is served from the cache: a HIT that the origin did not see.
    async fn assert_hit(&self, req: Req<'_>, what: &str) -> RawResponse {
        let before = self.origin.count();
        let target = req.target.to_string();
        let r = self.send(req).await;
        assert_eq!(
            status_of(&r),
            "HIT",
            "{what}: GET {target} was not a HIT: {:?} {:?}; origin: {}",
            r.status_line,
            r.headers,
            self.origin.describe()
        );
        assert_eq!(
            self.origin.count(),
            before,
            "{what}: a HIT asked the origin"
        );
        r
    }

    /// `req` is answered by the origin (not from the cache), which saw one more request.
    async fn assert_from_origin(&self, req: Req<'_>, what: &str) -> RawResponse {
        let before = self.origin.count();
        let target = req.target.to_string();
        let r = self.send(req).await;
        assert_ne!(
            status_of(&r),
            "HIT",
            "{what}: {target} was served from the cache: {:?}",
            text(&r)
        );
        assert_eq!(
            self.origin.count(),
            before + 1,
            "{what}: {target}: the origin was not asked exactly once: {}",
            self.origin.describe()
        );
        r
    }

    fn port(&self) -> u16 {
        self.gw.addr.port()
    }
}

/// How a poisoning attempt was defused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Defused {
    /// The header never reached the origin as sent; the poisoned request was stored, and the
    /// stored answer is the clean one.
    Stripped,
    /// The request carried an input the key does not cover and bypassed the cache.
    Bypassed,
}

/// Forwarding, host-override, URL-rewrite and method-override headers cannot poison a URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_headers_cannot_poison_the_cache() {
    let site = site().await;
    let cases: [(&str, &str, Defused); 12] = [
        ("X-Forwarded-Host", "evil.example", Defused::Stripped),
        ("X-Forwarded-Port", "8443", Defused::Stripped),
        ("X-Forwarded-Proto", "https", Defused::Stripped),
        ("X-Forwarded-Scheme", "https", Defused::Stripped),
        ("X-Host", "evil.example", Defused::Stripped),
        ("X-Original-URL", "/admin", Defused::Stripped),
        ("X-Rewrite-URL", "/admin", Defused::Stripped),
        // Not a forwarding header, so it is forwarded; it is not in the key, so it bypasses.
        ("X-HTTP-Method-Override", "DELETE", Defused::Bypassed),
        ("X-HTTP-Method", "DELETE", Defused::Bypassed),
        ("X-Method-Override", "PUT", Defused::Bypassed),
        (
            "Forwarded",
            "for=6.6.6.6;host=evil.example;proto=https",
            Defused::Stripped,
        ),
        ("X-Real-IP", "6.6.6.6", Defused::Stripped),
    ];
    for (i, (name, value, how)) in cases.into_iter().enumerate() {
        let path = format!("/poison/{i}");
        let what = format!("{name}: {value}");
        let poisoned = site
            .assert_from_origin(get(&path).header(name, value), &what)
            .await;
        let seen = site
            .seen_for(&poisoned)
            .unwrap_or_else(|| panic!("{what}: not answered by the origin"));
        let reached = seen.header_all(name).contains(&value);
        let observed = match (reached, status_of(&poisoned)) {
            (false, "MISS") => Defused::Stripped,
            (_, "BYPASS") => Defused::Bypassed,
            (reached, status) => panic!(
                "{what}: reached the origin: {reached}, X-Cache-Status {status:?}: neither \
                 stripped nor bypassed; body {:?}",
                text(&poisoned)
            ),
        };
        assert_eq!(observed, how, "{what}: defused another way");
        let clean = match how {
            Defused::Stripped => site.assert_hit(get(&path), &what).await,
            Defused::Bypassed => {
                site.assert_from_origin(get(&path), &what).await;
                site.assert_hit(get(&path), &what).await
            }
        };
        assert_eq!(
            text(&clean),
            clean_body(&path, HOST, site.port()),
            "{what}: the clean request got a poisoned answer"
        );
    }
}

/// `cookies: bypass` (the default): a `Cookie` request is neither stored nor served from the
/// cache, unless the response says it is shared; `cookies: ignore` caches it anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_requests_bypass_the_cache_unless_shared() {
    let site = site().await;
    let cookie = ("Cookie", "session=victim");

    // A Cookie request for a validatable 200 without Cache-Control (cacheable only through
    // default_ttl_seconds) is not stored: the clean request after it asks the origin.
    let r = site
        .assert_from_origin(get("/etag/a").header(cookie.0, cookie.1), "cookie first")
        .await;
    assert!(text(&r).contains("session=victim"));
    let r = site
        .assert_from_origin(get("/etag/a"), "clean after cookie")
        .await;
    assert_eq!(text(&r), clean_body("/etag/a", HOST, site.port()));
    site.assert_hit(get("/etag/a"), "clean after clean").await;

    // Nor is a Cookie request served the stored entry.
    site.assert_from_origin(get("/etag/b"), "clean first").await;
    site.assert_hit(get("/etag/b"), "clean again").await;
    let r = site
        .assert_from_origin(
            get("/etag/b").header(cookie.0, cookie.1),
            "cookie after clean",
        )
        .await;
    assert!(text(&r).contains("session=victim"), "{}", text(&r));

    // `Cache-Control: public` is the origin saying the answer may be shared: stored.
    site.assert_from_origin(get("/public/c").header(cookie.0, cookie.1), "public")
        .await;
    site.assert_hit(get("/public/c"), "public, clean").await;

    // `cookies: ignore` caches a Cookie request's answer as if the cookie were absent. This
    // is dangerous (a per-user answer is served to everyone) and is shown here as such: the
    // clean request gets the victim's cookie reflected back.
    site.assert_from_origin(
        get("/ignore-cookies/d").header(cookie.0, cookie.1),
        "cookies: ignore",
    )
    .await;
    let r = site
        .assert_hit(get("/ignore-cookies/d"), "cookies: ignore, clean")
        .await;
    assert!(text(&r).contains("session=victim"), "{}", text(&r));
}

/// A GET with a body (the key does not cover it) bypasses the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_a_body_bypasses_the_cache() {
    let site = site().await;
    let poisoned = site
        .assert_from_origin(
            Req {
                body: "hello",
                ..get("/body/x")
            },
            "GET with a body",
        )
        .await;
    assert_eq!(status_of(&poisoned), "BYPASS", "{:?}", poisoned.headers);
    assert!(text(&poisoned).contains("body=5"), "{}", text(&poisoned));
    let r = site.assert_from_origin(get("/body/x"), "clean").await;
    assert_eq!(text(&r), clean_body("/body/x", HOST, site.port()));
    site.assert_hit(get("/body/x"), "clean again").await;
}

/// On an `ignore_query` route the query never reaches the origin, so it cannot change what
/// the query-less URL gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_query_never_reaches_the_origin() {
    let site = site().await;
    let r = site
        .assert_from_origin(get("/iq/p?lang=evil"), "query on an ignore_query route")
        .await;
    assert_eq!(status_of(&r), "MISS");
    let seen = site.seen_for(&r).expect("answered by the origin");
    assert_eq!(seen.target, "/iq/p");
    let r = site.assert_hit(get("/iq/p"), "without the query").await;
    assert_eq!(text(&r), clean_body("/iq/p", HOST, site.port()));
    site.assert_hit(get("/iq/p?lang=other"), "another query")
        .await;
    assert!(
        !site.origin.saw_target_containing("lang="),
        "{}",
        site.origin.describe()
    );
}

/// A non-origin-form target is refused before the cache, so it cannot poison `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_origin_form_cannot_poison_the_root() {
    let site = site().await;
    let r = site.send(get("x:/admin")).await;
    assert_eq!(r.status, 400, "{:?}", text(&r));
    assert_eq!(site.origin.count(), 0, "{}", site.origin.describe());
    let r = site.assert_from_origin(get("/"), "GET /").await;
    assert_eq!(text(&r), clean_body("/", HOST, site.port()));
    let r = site.assert_hit(get("/"), "GET / again").await;
    assert_eq!(text(&r), clean_body("/", HOST, site.port()));
}

/// The key includes the scheme: a `301 -> https` stored from the cleartext listener is not
/// served on the TLS listener of the same gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_includes_the_scheme() {
    let site = site().await;
    let r = site.assert_from_origin(get("/redirect"), "cleartext").await;
    assert_eq!(r.status, 301, "{:?}", r.headers);
    let r = site.assert_hit(get("/redirect"), "cleartext again").await;
    assert_eq!(r.status, 301);

    // Same host (`site.test`, default port on each listener), same path, other scheme.
    let tls = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, site.tls_addr)
        .timeout(READ_LIMIT)
        .build()
        .unwrap();
    let url = format!("https://{HOST}:{}/redirect", site.tls_addr.port());
    let fetch = || async {
        let r = tls
            .get(&url)
            .header("host", HOST)
            .send()
            .await
            .expect("TLS request");
        let status = r.status().as_u16();
        let cache = r
            .headers()
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, cache, r.text().await.unwrap_or_default())
    };
    let before = site.origin.count();
    let (status, cache, body) = fetch().await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "MISS", "secure\n"),
        "the TLS listener got the cleartext entry"
    );
    assert_eq!(site.origin.count(), before + 1);
    let (status, cache, _) = fetch().await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    let r = site
        .assert_hit(get("/redirect"), "cleartext after TLS")
        .await;
    assert_eq!(r.status, 301);
}

/// The key includes the effective host, normalized: `A.example.` and `a.example` share an
/// entry, `a.example` and `b.example` do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_includes_the_effective_host() {
    let site = site().await;
    site.assert_from_origin(get("/host/x").host("A.example."), "A.example.")
        .await;
    let r = site
        .assert_hit(get("/host/x").host("a.example"), "a.example")
        .await;
    assert_eq!(text(&r), clean_body("/host/x", "a.example", site.port()));
    let r = site
        .assert_from_origin(get("/host/x").host("b.example"), "b.example")
        .await;
    assert_eq!(text(&r), clean_body("/host/x", "b.example", site.port()));
    let r = site
        .assert_hit(get("/host/x").host("a.example:80"), "a.example:80")
        .await;
    assert_eq!(text(&r), clean_body("/host/x", "a.example", site.port()));
}

/// A successful unsafe request invalidates its URL: POST, and an unknown (lowercase `purge`)
/// method the origin answers; not on a route with `invalidate_on_unsafe: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate() {
    let site = site().await;
    for (method, path) in [("POST", "/inv/post"), ("purge", "/inv/purge")] {
        site.assert_from_origin(get(path), method).await;
        site.assert_hit(get(path), method).await;
        let r = site
            .assert_from_origin(
                Req {
                    method,
                    ..get(path)
                },
                method,
            )
            .await;
        assert_eq!(r.status, 200, "{method}: {:?}", text(&r));
        let seen = site.seen_for(&r).expect("answered by the origin");
        assert_eq!(seen.method, method, "the origin got another method");
        site.assert_from_origin(get(path), &format!("GET after {method}"))
            .await;
    }
    site.assert_from_origin(get("/keep/x"), "keep").await;
    site.assert_hit(get("/keep/x"), "keep").await;
    let r = site
        .assert_from_origin(
            Req {
                method: "POST",
                ..get("/keep/x")
            },
            "POST on invalidate_on_unsafe: false",
        )
        .await;
    assert_eq!(r.status, 200);
    site.assert_hit(
        get("/keep/x"),
        "GET after POST, invalidate_on_unsafe: false",
    )
    .await;
}

/// RFC 9213: `CDN-Cache-Control` overrides `Cache-Control`, the gateway's own
/// `AVX-Cache-Control` overrides both and is not forwarded to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control_fields() {
    let site = site().await;
    let r = site
        .assert_from_origin(get("/cdn/x"), "CDN-Cache-Control")
        .await;
    assert_eq!(r.header("cdn-cache-control"), Some("max-age=60"));
    let r = site.assert_hit(get("/cdn/x"), "CDN-Cache-Control").await;
    assert_eq!(r.header("cdn-cache-control"), Some("max-age=60"));

    for what in ["first", "second"] {
        let r = site
            .assert_from_origin(
                get("/avx/x"),
                &format!("AVX-Cache-Control: no-store, {what}"),
            )
            .await;
        assert!(
            r.header("avx-cache-control").is_none(),
            "the gateway's targeted field reached the client: {:?}",
            r.headers
        );
        assert_eq!(r.header("cache-control"), Some("max-age=60"));
    }
}

/// An invalid `Age` (not one non-negative integer) stores the response stale: the next
/// request asks the origin again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_age_is_stored_stale() {
    let site = site().await;
    for path in ["/age-abc/x", "/age-list/x"] {
        site.assert_from_origin(get(path), path).await;
        let r = site.assert_from_origin(get(path), path).await;
        assert!(
            matches!(status_of(&r), "EXPIRED" | "MISS" | "REVALIDATED"),
            "{path}: X-Cache-Status {:?}",
            status_of(&r)
        );
    }
}

/// A HIT keeps the origin's `Date` byte for byte, also seconds after it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_keep_the_origin_date() {
    let site = site().await;
    let first = site.assert_from_origin(get("/dated/x"), "dated").await;
    let sent = first
        .header("x-sent-date")
        .expect("the origin's X-Sent-Date")
        .to_string();
    assert_eq!(first.header("date"), Some(sent.as_str()), "on the MISS");
    // Until the entry is two seconds old (its Age says so), so a gateway that restamped hits
    // with its own clock, or with the time of storing, would show it.
    let last: Mutex<Option<RawResponse>> = Mutex::new(None);
    let aged = wait_until(Duration::from_secs(4), || async {
        let r = site.assert_hit(get("/dated/x"), "dated").await;
        let age: u64 = r.header("age").and_then(|a| a.parse().ok()).unwrap_or(0);
        *last.lock().unwrap() = Some(r);
        age >= 2
    })
    .await;
    let hit = last.into_inner().unwrap().expect("a HIT");
    assert!(aged, "the HIT's Age never reached 2: {:?}", hit.headers);
    assert_eq!(
        hit.header("date"),
        Some(sent.as_str()),
        "the HIT's Date is not the origin's: {:?}",
        hit.headers
    );
}

/// From a trusted proxy, `X-Forwarded-Scheme`, `X-Host`, `X-Original-URL` and
/// `X-Rewrite-URL` (and the method overrides) are forwarded, so the request bypasses the
/// cache: its answer is neither stored nor served from an entry, and an untrusted client of
/// the same URL gets the clean answer before and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_overrides_bypass_the_cache() {
    let site = site_with("trusted_proxies: [127.0.0.2]\n").await;
    let cases = [
        ("X-Forwarded-Scheme", "https"),
        ("X-Host", "evil.example"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "DELETE"),
        ("X-Method-Override", "PUT"),
    ];
    for (i, (name, value)) in cases.into_iter().enumerate() {
        let path = format!("/trusted/{i}");
        let what = format!("{name}: {value} from the trusted proxy");
        let reflected = format!("{}: {value}\n", name.to_ascii_lowercase());
        let clean = clean_body(&path, HOST, site.port());
        // Before any entry exists: answered by the origin, which got the header as sent.
        let r = site
            .assert_from_origin(get(&path).header(name, value).via_proxy(), &what)
            .await;
        assert_eq!(status_of(&r), "BYPASS", "{what}: {:?}", r.headers);
        let seen = site.seen_for(&r).expect("answered by the origin");
        assert_eq!(
            seen.header_all(name),
            vec![value],
            "{what}: {:?}",
            seen.headers
        );
        assert!(text(&r).contains(&reflected), "{what}: {:?}", text(&r));
        // It was not stored: a plain client asks the origin and gets the clean answer,
        // which is stored.
        let r = site
            .assert_from_origin(get(&path), &format!("{what}, then a plain client"))
            .await;
        assert_eq!(status_of(&r), "MISS");
        assert_eq!(
            text(&r),
            clean,
            "{what}: the plain client got a poisoned answer"
        );
        site.assert_hit(get(&path), &what).await;
        // With an entry stored: still the origin (not the entry), and the entry is untouched.
        let r = site
            .assert_from_origin(get(&path).header(name, value).via_proxy(), &what)
            .await;
        assert_eq!(status_of(&r), "BYPASS", "{what}: {:?}", r.headers);
        assert!(text(&r).contains(&reflected), "{what}: {:?}", text(&r));
        let r = site.assert_hit(get(&path), &what).await;
        assert_eq!(text(&r), clean, "{what}: the entry was replaced");
    }
}

/// A trusted proxy's `X-Forwarded-Proto` and `X-Forwarded-Host` are forwarded, but are not in
/// the key and cause no bypass (the key's scheme is the listener's): an origin that answers
/// by them shares one entry between their values, unless it says `Vary` or the route keys on
/// the header (`key.include_headers`). This is the documented limit of docs/security.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_forwarding_headers_are_not_in_the_key() {
    let site = site_with("trusted_proxies: [127.0.0.2]\n").await;
    let https = ("X-Forwarded-Proto", "https");
    let http = ("X-Forwarded-Proto", "http");

    // No Vary: the https answer is stored under the listener's scheme (http) and served to
    // requests the proxy says came in over http, and to plain clients.
    let r = site
        .assert_from_origin(
            get("/redirect/xfp").header(https.0, https.1).via_proxy(),
            "https",
        )
        .await;
    assert_eq!(
        (r.status, status_of(&r), text(&r).as_str()),
        (200, "MISS", "secure\n")
    );
    let seen = site.seen_for(&r).expect("answered by the origin");
    assert_eq!(seen.header_all("x-forwarded-proto"), vec!["https"]);
    let r = site
        .assert_hit(
            get("/redirect/xfp").header(http.0, http.1).via_proxy(),
            "http",
        )
        .await;
    assert_eq!((r.status, text(&r).as_str()), (200, "secure\n"));
    let r = site.assert_hit(get("/redirect/xfp"), "plain client").await;
    assert_eq!((r.status, text(&r).as_str()), (200, "secure\n"));

    // The same for X-Forwarded-Host: the first proxy-named host's answer is everyone's.
    let r = site
        .assert_from_origin(
            get("/xfh/x")
                .header("X-Forwarded-Host", "a.example")
                .via_proxy(),
            "X-Forwarded-Host a",
        )
        .await;
    assert!(
        text(&r).contains("x-forwarded-host: a.example\n"),
        "{}",
        text(&r)
    );
    let r = site
        .assert_hit(
            get("/xfh/x")
                .header("X-Forwarded-Host", "b.example")
                .via_proxy(),
            "X-Forwarded-Host b",
        )
        .await;
    assert!(
        text(&r).contains("x-forwarded-host: a.example\n"),
        "{}",
        text(&r)
    );

    // `Vary: X-Forwarded-Proto` from the origin (`/vary-proto`), or the header in the route's
    // key (`/keyed-proto`), keeps one entry per value.
    for path in ["/vary-proto/x", "/keyed-proto/x"] {
        let r = site
            .assert_from_origin(get(path).header(https.0, https.1).via_proxy(), path)
            .await;
        assert_eq!((r.status, text(&r).as_str()), (200, "secure\n"), "{path}");
        let r = site
            .assert_from_origin(get(path).header(http.0, http.1).via_proxy(), path)
            .await;
        assert_eq!(r.status, 301, "{path}: {:?}", text(&r));
        let r = site
            .assert_hit(get(path).header(https.0, https.1).via_proxy(), path)
            .await;
        assert_eq!((r.status, text(&r).as_str()), (200, "secure\n"), "{path}");
        let r = site
            .assert_hit(get(path).header(http.0, http.1).via_proxy(), path)
            .await;
        assert_eq!(r.status, 301, "{path}");
    }
}
