//! Routing precedence through the real gateway: hosts, paths, methods, headers, rewrites and
//! fixed responses. Each route targets its own upstream so the echo's `x-upstream` header names
//! the route that served a request.

use crate::harness::{client, GatewayProcess, TestUpstream};
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

/// What came back for one request.
struct Reply {
    status: u16,
    /// `x-upstream` of the echo server, absent when the gateway answered itself.
    upstream: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    /// The echo server's JSON (`uri`, `headers`, ...).
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo body ({e}): {:?}", self.body))
    }
}

async fn send(req: RequestBuilder) -> Reply {
    let resp = req.send().await.expect("request through the gateway");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let upstream = headers
        .get("x-upstream")
        .map(|v| v.to_str().expect("x-upstream is text").to_string());
    let body = resp.text().await.expect("response body");
    Reply {
        status,
        upstream,
        headers,
        body,
    }
}

/// Starts one echo upstream per name.
async fn upstreams(names: &[&str]) -> Vec<TestUpstream> {
    let mut ups = Vec::new();
    for n in names {
        ups.push(TestUpstream::start(n).await);
    }
    ups
}

/// `upstreams:` YAML giving each test upstream a pool of the same name.
fn upstreams_yaml(ups: &[TestUpstream]) -> String {
    let mut s = String::from("upstreams:\n");
    for u in ups {
        s.push_str(&format!(
            "  {}:\n    servers: [{{ address: \"{}\" }}]\n",
            u.name, u.addr
        ));
    }
    s
}

fn gateway(ups: &[TestUpstream], routes: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\n{}routes:\n{routes}",
        upstreams_yaml(ups)
    ))
}

/// Asserts `GET path` with `Host: host` is served by `want` (an upstream name) or, for
/// `None`, answered 404 by the gateway itself.
async fn expect_host(gw: &GatewayProcess, host: &str, path: &str, want: Option<&str>) {
    let r = send(client().get(gw.url(path)).header("host", host)).await;
    match want {
        Some(name) => {
            assert_eq!(r.status, 200, "Host {host} {path}: {}", r.body);
            assert_eq!(r.upstream.as_deref(), Some(name), "Host {host} {path}");
            // The host is preserved in its normal form (lowercase, no trailing dot, no
            // default port): the one effective host that routing and the cache key use.
            let normal = host.to_ascii_lowercase();
            assert_eq!(
                r.echo()["headers"]["host"],
                normal.as_str(),
                "Host is preserved"
            );
        }
        None => {
            assert_eq!(r.status, 404, "Host {host} {path}: {}", r.body);
            assert_eq!(r.upstream, None, "Host {host} {path}");
        }
    }
}

async fn expect_path(gw: &GatewayProcess, path: &str, want: Option<&str>) {
    let r = send(client().get(gw.url(path))).await;
    match want {
        Some(name) => {
            assert_eq!(r.status, 200, "GET {path}: {}", r.body);
            assert_eq!(r.upstream.as_deref(), Some(name), "GET {path}");
            assert_eq!(r.echo()["uri"], path, "GET {path} is forwarded unchanged");
        }
        None => {
            assert_eq!(r.status, 404, "GET {path} should find no route: {}", r.body);
            assert_eq!(r.upstream, None, "GET {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_wildcard_beats_catch_all() {
    let ups = upstreams(&["exact", "wild", "deep", "any"]).await;
    // The catch-all comes first in the file: host specificity wins over file order.
    let gw = gateway(
        &ups,
        r#"
  - name: any
    match: { path_prefix: / }
    upstream: any
  - name: wild
    match: { host: "*.example.com" }
    upstream: wild
  - name: deep
    match: { host: "*.eu.example.com" }
    upstream: deep
  - name: exact
    match: { host: api.example.com, path_prefix: /v1 }
    upstream: exact
"#,
    );
    expect_host(&gw, "api.example.com", "/v1/users", Some("exact")).await;
    // Host matching ignores case and the port.
    expect_host(&gw, "API.Example.COM:8080", "/v1", Some("exact")).await;
    // The exact host's route does not match this path: the wildcard is next.
    expect_host(&gw, "api.example.com", "/v2/users", Some("wild")).await;
    expect_host(&gw, "foo.example.com", "/v1/users", Some("wild")).await;
    expect_host(&gw, "a.b.example.com", "/", Some("wild")).await;
    // The longest wildcard suffix wins.
    expect_host(&gw, "x.eu.example.com", "/", Some("deep")).await;
    expect_host(&gw, "y.x.eu.example.com", "/", Some("deep")).await;
    // A wildcard needs a label in front of its suffix, on a dot boundary.
    expect_host(&gw, "example.com", "/v1/users", Some("any")).await;
    expect_host(&gw, "notexample.com", "/", Some("any")).await;
    expect_host(&gw, "other.org", "/v1/users", Some("any")).await;
    for u in &ups {
        assert!(u.hits() > 0, "upstream {} was never used", u.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_only_routes_leave_other_hosts_unrouted() {
    let ups = upstreams(&["only"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: only
    match: { host: app.example.com }
    upstream: only
"#,
    );
    expect_host(&gw, "app.example.com", "/anything", Some("only")).await;
    expect_host(&gw, "other.example.com", "/anything", None).await;
    expect_host(&gw, "app.example.com.evil.org", "/anything", None).await;
    assert_eq!(ups[0].hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_path_then_longest_prefix_then_regex_in_file_order() {
    let ups = upstreams(&["re_num", "re_any", "re_api", "short", "long", "exact"]).await;
    // Regexes come first in the file and the exact path last: precedence is by kind.
    let gw = gateway(
        &ups,
        r#"
  - name: re_num
    match: { path_regex: '^/r/[0-9]+$' }
    upstream: re_num
  - name: re_any
    match: { path_regex: '^/r/' }
    upstream: re_any
  - name: re_api
    match: { path_regex: '^/api/' }
    upstream: re_api
  - name: short
    match: { path_prefix: /api/ }
    upstream: short
  - name: long
    match: { path_prefix: /api/v1 }
    upstream: long
  - name: exact
    match: { path: /api/v1/users }
    upstream: exact
"#,
    );
    expect_path(&gw, "/api/v1/users", Some("exact")).await;
    expect_path(&gw, "/api/v1/users?page=2", Some("exact")).await;
    expect_path(&gw, "/api/v1/users/7", Some("long")).await;
    expect_path(&gw, "/api/v1", Some("long")).await;
    expect_path(&gw, "/api/v1/", Some("long")).await;
    // Prefixes are segment-aware: /api/v1 does not cover /api/v10.
    expect_path(&gw, "/api/v10", Some("short")).await;
    // Any prefix beats a regex that also matches.
    expect_path(&gw, "/api/v2/x", Some("short")).await;
    // Both regexes match: the first in file order wins.
    expect_path(&gw, "/r/42", Some("re_num")).await;
    expect_path(&gw, "/r/42?x=1", Some("re_num")).await; // regexes see the path only
    expect_path(&gw, "/r/abc", Some("re_any")).await;
    expect_path(&gw, "/r", None).await;
    expect_path(&gw, "/elsewhere", None).await;
    assert_eq!(
        ups[2].hits(),
        0,
        "re_api is always shadowed by the /api/ prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_match_whole_segments() {
    let ups = upstreams(&["slash", "bare", "root"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: slash
    match: { path_prefix: /api/ }
    upstream: slash
  - name: bare
    match: { path_prefix: /web }
    upstream: bare
  - name: root
    match: { path: / }
    upstream: root
"#,
    );
    expect_path(&gw, "/api/x", Some("slash")).await;
    expect_path(&gw, "/api/", Some("slash")).await;
    expect_path(&gw, "/api/x/y/z?q=1", Some("slash")).await;
    expect_path(&gw, "/apix", None).await;
    expect_path(&gw, "/apix/y", None).await;
    expect_path(&gw, "/web", Some("bare")).await;
    expect_path(&gw, "/web/", Some("bare")).await;
    expect_path(&gw, "/web/x", Some("bare")).await;
    expect_path(&gw, "/web/x/y?q=1", Some("bare")).await;
    expect_path(&gw, "/webx", None).await;
    expect_path(&gw, "/web.html", None).await;
    expect_path(&gw, "/webx/y", None).await;
    expect_path(&gw, "/", Some("root")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_and_headers_select_routes() {
    let ups = upstreams(&["writes", "reads", "canary", "debug", "plain"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: writes
    match: { path_prefix: /m, methods: [POST, PUT] }
    upstream: writes
  - name: reads
    match: { path_prefix: /m }
    upstream: reads
  - name: post_only
    match: { path: /submit, methods: [POST] }
    upstream: writes
  - name: canary
    match: { path_prefix: /h, headers: { x-env: canary } }
    upstream: canary
  - name: debug
    match: { path_prefix: /h, headers: { X-Debug: "*" } }
    upstream: debug
  - name: plain
    match: { path_prefix: /h }
    upstream: plain
"#,
    );
    let c = client();
    let via = |m: Method, p: &str| c.request(m, gw.url(p));
    for (method, path, want) in [
        (Method::POST, "/m/1", "writes"),
        (Method::PUT, "/m", "writes"),
        (Method::GET, "/m/1", "reads"),
        (Method::DELETE, "/m/1", "reads"),
        (Method::PATCH, "/m", "reads"),
        (Method::POST, "/submit", "writes"),
    ] {
        let r = send(via(method.clone(), path)).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        assert_eq!(r.upstream.as_deref(), Some(want), "{method} {path}");
        assert_eq!(r.echo()["method"], method.as_str());
    }
    let r = send(via(Method::GET, "/submit")).await;
    assert_eq!(r.status, 404, "GET /submit has no route: {}", r.body);

    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[("x-env", "canary")], "canary"),
        (&[("X-Env", "canary")], "canary"),
        (&[("x-env", "prod")], "plain"),
        (&[("x-env", "Canary")], "plain"),
        (&[("x-debug", "1")], "debug"),
        (&[("x-debug", "")], "debug"),
        // Both constraints hold: the first route in file order wins.
        (&[("x-debug", "1"), ("x-env", "canary")], "canary"),
    ];
    for (headers, want) in cases {
        let mut req = via(Method::GET, "/h/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = send(req).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
        assert_eq!(r.upstream.as_deref(), Some(want), "headers {headers:?}");
    }
    let r = send(via(Method::GET, "/h")).await;
    assert_eq!(r.upstream.as_deref(), Some("plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_removes_the_prefix_and_keeps_the_query() {
    let ups = upstreams(&["svc", "raw", "keep"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: svc
    match: { path_prefix: /svc/ }
    strip_prefix: true
    upstream: svc
  - name: raw
    match: { path_prefix: /raw }
    strip_prefix: true
    upstream: raw
  - name: keep
    match: { path_prefix: /keep }
    upstream: keep
"#,
    );
    for (path, want_up, want_uri) in [
        ("/svc/users/7?x=1&y=2", "svc", "/users/7?x=1&y=2"),
        ("/svc/", "svc", "/"),
        ("/svc/a/", "svc", "/a/"),
        ("/raw", "raw", "/"),
        ("/raw?q=1", "raw", "/?q=1"),
        ("/raw/", "raw", "/"),
        ("/raw/a/b?q=1", "raw", "/a/b?q=1"),
        ("/keep/a?q=1", "keep", "/keep/a?q=1"),
    ] {
        let r = send(client().get(gw.url(path))).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert_eq!(r.upstream.as_deref(), Some(want_up), "GET {path}");
        assert_eq!(r.echo()["uri"], want_uri, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_false_sends_the_backend_address() {
    let ups = upstreams(&["backend"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: rewrite
    match: { path_prefix: /rewrite }
    preserve_host: false
    upstream: backend
  - name: keep
    match: { path_prefix: /keep }
    upstream: backend
"#,
    );
    let backend = ups[0].addr.to_string();

    let r = send(
        client()
            .get(gw.url("/rewrite"))
            .header("host", "public.example"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.echo();
    assert_eq!(echo["headers"]["host"], backend.as_str());
    assert_eq!(echo["headers"]["x-forwarded-host"], "public.example");

    let r = send(
        client()
            .get(gw.url("/keep"))
            .header("host", "public.example"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.echo();
    assert_eq!(echo["headers"]["host"], "public.example");
    assert_eq!(echo["headers"]["x-forwarded-host"], "public.example");

    // Without an explicit Host the client's own (the gateway address) is preserved.
    let r = send(client().get(gw.url("/keep"))).await;
    assert_eq!(r.echo()["headers"]["host"], gw.addr.to_string().as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respond_routes_answer_without_an_upstream() {
    // No upstream at all: everything below is answered by the gateway itself.
    let gw = GatewayProcess::start(
        r#"
listeners:
  - address: "{listen}"
routes:
  - name: teapot
    match: { path: /teapot }
    respond:
      status: 418
      headers: { x-custom: short-and-stout, content-type: text/plain }
      body: "I'm a teapot"
  - name: gone
    match: { path_prefix: /old, methods: [GET] }
    respond: { status: 410 }
  - name: ok
    match: { path: /ok }
    respond: { body: fine }
"#,
    );
    let r = send(
        client()
            .get(gw.url("/teapot"))
            .header("x-request-id", "rid-1"),
    )
    .await;
    assert_eq!(r.status, 418);
    assert_eq!(r.headers["x-custom"], "short-and-stout");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["x-request-id"], "rid-1");
    assert_eq!(r.body, "I'm a teapot");
    assert_eq!(r.upstream, None);

    let r = send(client().head(gw.url("/teapot"))).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.headers["x-custom"], "short-and-stout");
    assert_eq!(r.body, "");

    let r = send(client().get(gw.url("/old/page"))).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.body, "");

    let r = send(client().get(gw.url("/ok"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "fine");

    // The method constraint applies to respond routes too.
    let r = send(client().post(gw.url("/old/page"))).await;
    assert_eq!(r.status, 404);

    // A request body the fixed response never reads does not leak into the next request on
    // the same connection.
    let c = client();
    for size in [7, 100_000] {
        let r = send(c.post(gw.url("/ok")).body("x".repeat(size))).await;
        assert_eq!((r.status, r.body.as_str()), (200, "fine"));
        let r = send(c.get(gw.url("/teapot"))).await;
        assert_eq!((r.status, r.body.as_str()), (418, "I'm a teapot"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_a_short_404() {
    let ups = upstreams(&["a"]).await;
    let gw = gateway(
        &ups,
        r#"
  - name: a
    match: { path_prefix: /a }
    upstream: a
"#,
    );
    for req in [
        client().get(gw.url("/nope")),
        client().post(gw.url("/b/c?d=e")).body("payload"),
        client().get(gw.url("/ab")),
    ] {
        let r = send(req).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.upstream, None);
        assert!(
            !r.body.is_empty() && r.body.len() < 100,
            "a short 404 body, got {:?}",
            r.body
        );
    }
    // The connection stays usable after a 404 (even one whose body was never read) and
    // routed requests still work.
    let c = client();
    for _ in 0..3 {
        assert_eq!(send(c.get(gw.url("/zzz"))).await.status, 404);
        let r = send(c.post(gw.url("/zzz")).body("left over")).await;
        assert_eq!(r.status, 404);
        let r = send(c.get(gw.url("/a/1"))).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.echo()["method"], "GET");
        assert_eq!(r.echo()["uri"], "/a/1");
    }
    assert_eq!(ups[0].hits(), 3);
}
