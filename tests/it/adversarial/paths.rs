//! Path normalization on raw sockets: dot-segments, encoded dots and letters, merged slashes,
//! encoded slashes, semicolons and control bytes, under the default `server:` path rules and
//! under each non-default one.
//!
//! Every site has a fixed-answer route on `/admin` (403 `denied`), a `strip_prefix` route on
//! `/api`, a `/pub` route and a catch-all. `/api` goes to its own [`RawOrigin`] (`api`) and
//! everything else to `origin`, so which route proxied a request is visible from which origin
//! received it: `/api/../internal` must arrive at `origin` as `/internal`, and a stripped
//! `/api` path could arrive as `/internal` too, but only at `api`.

use super::server_section;
use crate::harness::raw_http::RawResponse;
use crate::harness::{check_config, GatewayProcess, RawConn, RawOrigin};
use std::io;
use std::time::Duration;

/// Bound on any single response.
const READ_LIMIT: Duration = Duration::from_secs(3);
/// Bound on the close that must follow a refusal.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// How a request must end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 403 `denied` from the `/admin` route; no origin sees anything.
    Denied,
    /// 400 and a close; no origin sees anything.
    Refused,
    /// 400 with body `bad request: {reason}\n` and a close; no origin sees anything.
    RefusedWith(&'static str),
    /// 404 `no route` from the gateway itself; no origin sees anything.
    NoRoute,
    /// Proxied to `origin` (through `/pub` or the catch-all) with exactly this target.
    Origin(&'static str),
    /// Proxied to `api` (through the stripping `/api` route) with exactly this target.
    Api(&'static str),
}

struct Site {
    gw: GatewayProcess,
    origin: RawOrigin,
    api: RawOrigin,
}

/// A site whose `server:` section is the adversarial one plus `extra` (lines indented two
/// spaces, e.g. `  escaped_slashes: keep\n`).
async fn site(extra: &str) -> Site {
    site_with(extra, true).await
}

/// As [`site`]; without `catch_all`, there is no `all` route, so only `/admin`, `/api` and
/// `/pub` are routed.
async fn site_with(extra: &str, catch_all: bool) -> Site {
    let origin = RawOrigin::start().await;
    let api = RawOrigin::start().await;
    let gw = GatewayProcess::start(&format!(
        r#"{server}{extra}listeners:
  - address: {{listen}}
upstreams:
  origin:
    servers: [{{ address: {origin} }}]
  api:
    servers: [{{ address: {api} }}]
routes:
  - {{ name: admin, match: {{ path_prefix: /admin }}, respond: {{ status: 403, body: "denied" }} }}
  - {{ name: api, match: {{ path_prefix: /api }}, strip_prefix: true, upstream: api }}
  - {{ name: pub, match: {{ path_prefix: /pub }}, upstream: origin }}
{all}"#,
        server = server_section(),
        origin = origin.addr,
        api = api.addr,
        all = if catch_all {
            "  - { name: all, match: { path_prefix: / }, upstream: origin }\n"
        } else {
            ""
        },
    ));
    Site { gw, origin, api }
}

fn describe(resp: &io::Result<RawResponse>) -> String {
    match resp {
        Ok(r) => format!(
            "{:?} body {:?}",
            r.status_line,
            String::from_utf8_lossy(&r.body)
        ),
        Err(e) => format!("no response ({e})"),
    }
}

impl Site {
    fn seen(&self) -> String {
        format!(
            "origin: {}; api: {}",
            self.origin.describe(),
            self.api.describe()
        )
    }

    /// Sends `GET {path}` on a fresh connection and checks both ends against `expect`.
    async fn check(&self, path: &str, expect: Expect) {
        let (before, before_api) = (self.origin.count(), self.api.count());
        let mut conn = RawConn::connect(self.gw.addr).await;
        let raw = format!("GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n");
        let _ = conn.send(raw.as_bytes()).await;
        let resp = conn.read_response(READ_LIMIT).await;
        let what = format!("GET {path:?} (expecting {expect:?})");
        let status = resp.as_ref().ok().map(|r| r.status);
        match expect {
            Expect::Denied | Expect::Refused | Expect::RefusedWith(_) | Expect::NoRoute => {
                if let Expect::Denied = expect {
                    let body = resp.as_ref().map(|r| r.body.clone()).unwrap_or_default();
                    assert!(
                        status == Some(403) && body == b"denied",
                        "{what}: got {}; {}",
                        describe(&resp),
                        self.seen()
                    );
                } else if let Expect::NoRoute = expect {
                    let body = resp.as_ref().map(|r| r.body.clone()).unwrap_or_default();
                    assert!(
                        status == Some(404) && body == b"no route\n",
                        "{what}: got {}; {}",
                        describe(&resp),
                        self.seen()
                    );
                } else {
                    assert_eq!(
                        status,
                        Some(400),
                        "{what}: got {}; {}",
                        describe(&resp),
                        self.seen()
                    );
                    if let Expect::RefusedWith(reason) = expect {
                        let body = resp.as_ref().map(|r| r.body.clone()).unwrap_or_default();
                        assert_eq!(
                            String::from_utf8_lossy(&body),
                            format!("bad request: {reason}\n"),
                            "{what}: another reason"
                        );
                    }
                    let (_, closed) = conn.read_until_closed(CLOSE_LIMIT).await;
                    assert!(closed, "{what}: the connection stayed open after the 400");
                }
                assert_eq!(
                    (self.origin.count(), self.api.count()),
                    (before, before_api),
                    "{what}: the request reached an origin: {}",
                    self.seen()
                );
            }
            Expect::Origin(target) | Expect::Api(target) => {
                let (to, other, n, n_other, name) = match expect {
                    Expect::Origin(_) => (&self.origin, &self.api, before, before_api, "origin"),
                    _ => (&self.api, &self.origin, before_api, before, "api"),
                };
                assert_eq!(
                    status,
                    Some(200),
                    "{what}: got {}; {}",
                    describe(&resp),
                    self.seen()
                );
                let seen = to.requests();
                assert_eq!(
                    (seen.len(), other.count()),
                    (n + 1, n_other),
                    "{what}: not exactly one request at {name} alone: {}",
                    self.seen()
                );
                assert_eq!(
                    seen[n].target,
                    target,
                    "{what}: {name} got another target: {}",
                    self.seen()
                );
            }
        }
    }

    async fn check_all(&self, cases: &[(&str, Expect)]) {
        for (path, expect) in cases {
            self.check(path, *expect).await;
        }
    }
}

/// The issue's table under the default path rules (normalize_path, merge_slashes,
/// escaped_slashes: reject, path_semicolons: reject).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rules_resolve_before_routing() {
    let site = site("").await;
    site.check_all(&[
        ("/pub/../admin", Expect::Denied),
        ("/pub/%2e%2e/admin", Expect::Denied),
        ("/pub/%2E%2e/admin", Expect::Denied),
        ("//admin", Expect::Denied),
        ("/./admin", Expect::Denied),
        ("/%61dmin", Expect::Denied),
        ("/admin%2f", Expect::Refused),
        ("/pub/..%2fadmin", Expect::Refused),
        ("/pub/..%5cadmin", Expect::Refused),
        // Resolved before routing: the catch-all proxies `/internal`, the `/api` route (and
        // its strip_prefix) never sees it.
        ("/api/../internal", Expect::Origin("/internal")),
        ("/api/x/../y", Expect::Api("/y")),
        ("/pub/./q?x=../admin", Expect::Origin("/pub/q?x=../admin")),
    ])
    .await;
}

/// The reason the defaults refuse an encoded slash with (`escaped_slashes: reject`).
const ENCODED_SLASH: &str = "encoded slash in path";

/// The issue's table, item by item, under the default path rules: once as written, against
/// the `respond: 403` route on `/admin`, and once adapted to the stripped `/api` prefix, where
/// a path that resolved only after `strip_prefix` would reach the `api` origin outside its
/// prefix. Each case is the exact answer and exactly what each origin received (the target,
/// byte for byte, or nothing); the rows are those of docs/security.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_table_against_the_deny_and_the_strip_routes() {
    let site = site("").await;
    // Against the `respond: 403` route.
    site.check_all(&[
        ("/pub/../admin", Expect::Denied),
        ("/pub/%2e%2e/admin", Expect::Denied),
        ("//admin", Expect::Denied),
        ("/./admin", Expect::Denied),
        ("/%61dmin", Expect::Denied),
        ("/admin%2f", Expect::RefusedWith(ENCODED_SLASH)),
        ("/pub/..%2fadmin", Expect::RefusedWith(ENCODED_SLASH)),
        ("/api/../internal", Expect::Origin("/internal")),
    ])
    .await;
    // The same items through the stripped prefix. A dot-segment that leaves `/api` leaves
    // the `api` route too: it is resolved before routing, so `strip_prefix` never sees it and
    // `/../admin` can never go upstream.
    site.check_all(&[
        ("/api/../admin", Expect::Denied),
        ("/api/%2e%2e/admin", Expect::Denied),
        ("/api/.%2e/admin", Expect::Denied),
        ("/api//x", Expect::Api("/x")),
        ("//api/x", Expect::Api("/x")),
        ("/api///x//y", Expect::Api("/x/y")),
        ("/api/./x", Expect::Api("/x")),
        ("/./api/x", Expect::Api("/x")),
        ("/api/%61dmin", Expect::Api("/admin")),
        ("/%61pi/x", Expect::Api("/x")),
        ("/api/x%2f", Expect::RefusedWith(ENCODED_SLASH)),
        ("/api%2fx", Expect::RefusedWith(ENCODED_SLASH)),
        ("/api/..%2fadmin", Expect::RefusedWith(ENCODED_SLASH)),
        ("/api/../internal", Expect::Origin("/internal")),
        ("/api/%2e%2e/internal", Expect::Origin("/internal")),
        ("/api/..", Expect::Origin("/")),
        // Dot-segments that stay inside the prefix are resolved inside it; climbing one
        // segment further leaves it.
        ("/api/x/../y", Expect::Api("/y")),
        ("/api/x/..", Expect::Api("/")),
        ("/api/x/%2e%2e/%2e%2e/admin", Expect::Denied),
    ])
    .await;
    assert!(
        !site.api.saw_target_containing(".."),
        "a dot-segment went upstream: {}",
        site.seen()
    );
    assert!(
        !site.api.saw_target_containing("%"),
        "an escape went upstream: {}",
        site.seen()
    );
}

/// Without a catch-all, a path that resolves out of `/api` finds no route: 404 `no route`,
/// never the `api` route with a climbing stripped path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_resolved_out_of_the_strip_prefix_without_a_catch_all_has_no_route() {
    let site = site_with("", false).await;
    site.check_all(&[
        ("/api/../internal", Expect::NoRoute),
        ("/api/%2e%2e/internal", Expect::NoRoute),
        ("/api/../admin", Expect::Denied),
        ("/api/x/../y", Expect::Api("/y")),
    ])
    .await;
}

/// `merge_slashes: false`: runs of `/` are kept, so `//admin` is not the `/admin` route (its
/// first segment is empty) and the catch-all forwards it as `//admin`, as docs/security.md
/// says; dot-segments are still resolved, and `strip_prefix` keeps the doubled slash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_slashes_false_keeps_doubled_slashes() {
    let site = site("  merge_slashes: false\n").await;
    site.check_all(&[
        ("//admin", Expect::Origin("//admin")),
        ("/a//b", Expect::Origin("/a//b")),
        ("/pub//x", Expect::Origin("/pub//x")),
        // A doubled slash after the prefix is still under it.
        ("/admin//x", Expect::Denied),
        // Normalization is still on.
        ("/pub/../admin", Expect::Denied),
        ("/./admin", Expect::Denied),
        ("/%61dmin", Expect::Denied),
        ("/admin%2f", Expect::RefusedWith(ENCODED_SLASH)),
        ("/api/x", Expect::Api("/x")),
        ("/api//x", Expect::Api("//x")),
        ("//api/x", Expect::Origin("//api/x")),
        // `..` removes the empty segment like any other.
        ("/api//../x", Expect::Api("/x")),
    ])
    .await;
    assert!(
        !site.origin.requests().iter().any(|r| r.target == "/admin"),
        "{}",
        site.seen()
    );
}

/// Paths no rule can make safe are refused whatever the policy; others are rewritten into
/// one canonical form before they go upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_canonical_paths() {
    let site = site("").await;
    site.check_all(&[
        ("/../x", Expect::Refused),
        ("/pub/../../x", Expect::Refused),
        ("/a%00b", Expect::Refused),
        ("/a%0d%0a", Expect::Refused),
        ("/a\\b", Expect::Refused),
        ("/a%zz", Expect::Refused),
        ("/admin;x", Expect::Refused),
        ("/admin%3bx", Expect::Refused),
        ("/a//b///c", Expect::Origin("/a/b/c")),
        ("/A%7eB", Expect::Origin("/A~B")),
        ("/pub/%3f%2a", Expect::Origin("/pub/%3F%2A")),
    ])
    .await;
}

/// `escaped_slashes: keep`: an encoded slash never separates segments, so `..%2f` is not a
/// dot-segment and cannot climb to `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_keep() {
    let site = site("  escaped_slashes: keep\n").await;
    site.check_all(&[
        ("/pub/..%2fadmin", Expect::Origin("/pub/..%2Fadmin")),
        ("/pub/../admin", Expect::Denied),
        // Observed, and inherent to `keep`: `admin%2F` is one segment, not `admin` followed
        // by a slash, so the segment-aware `/admin` prefix does not match and the catch-all
        // proxies it. An origin that decodes `%2F` would read `/admin/`: `keep` is only safe
        // in front of origins that do not.
        ("/admin%2f", Expect::Origin("/admin%2F")),
    ])
    .await;
    assert!(
        !site
            .origin
            .requests()
            .iter()
            .any(|r| r.path() == "/admin" || r.path().starts_with("/admin/")),
        "{}",
        site.seen()
    );
}

/// `escaped_slashes: unescape`: an encoded slash is a slash before anything else, so
/// `/pub/..%2fadmin` is `/admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_slashes_unescape() {
    let site = site("  escaped_slashes: unescape\n").await;
    site.check_all(&[
        ("/pub/..%2fadmin", Expect::Denied),
        ("/pub/..%5Cadmin", Expect::Denied),
        ("/pub%2fx", Expect::Origin("/pub/x")),
    ])
    .await;
}

/// `path_semicolons: keep`: `;` is an ordinary path byte and reaches the origin as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_semicolons_keep() {
    let site = site("  path_semicolons: keep\n").await;
    site.check_all(&[
        ("/pub;x", Expect::Origin("/pub;x")),
        ("/pub/a;b=c", Expect::Origin("/pub/a;b=c")),
    ])
    .await;
}

/// `normalize_path: false`: nothing resolves `..`, so a strip_prefix route refuses a
/// dot-segment instead of sending `/../admin` upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_normalization_strip_prefix_refuses_dot_segments() {
    let site = site("  normalize_path: false\n").await;
    site.check_all(&[
        ("/api/../admin", Expect::Refused),
        ("/api/%2e%2e/admin", Expect::Refused),
        ("/api/./x", Expect::Refused),
        ("/api/x", Expect::Api("/x")),
    ])
    .await;
    assert!(
        !site.api.saw_target_containing(".."),
        "a dot-segment went upstream: {}",
        site.seen()
    );
}

/// A route prefix that is not in normal form could never match a (normalized) request: a
/// config error that names the key.
#[test]
fn non_normal_route_prefix_is_a_config_error() {
    let (ok, out, _, _dir) = check_config(
        r#"
listeners:
  - address: 127.0.0.1:18080
upstreams:
  origin:
    servers: [{ address: "127.0.0.1:18081" }]
routes:
  - { name: fine, match: { path_prefix: /ok }, upstream: origin }
  - { name: doubled, match: { path_prefix: /a//b }, upstream: origin }
"#,
    );
    assert!(!ok, "the config was accepted:\n{out}");
    assert!(
        out.contains("routes[1].match.path_prefix"),
        "the error does not name the key:\n{out}"
    );
}
