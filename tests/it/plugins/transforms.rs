//! `request_headers`, `response_headers` (with variables), `redirect` and `rewrite`.

use super::gateway;
use crate::harness::{client, fetch, RawOrigin};

#[tokio::test]
async fn header_plugins_set_add_and_remove_with_variables() {
    let origin = RawOrigin::start_with(|_| {
        crate::harness::OriginReply::new(200, "ok")
            .header("server", "origin/1.0")
            .header("x-powered-by", "php")
    })
    .await;
    let gw = gateway(
        &origin,
        r#"
  - name: api
    match: { path_prefix: / }
    upstream: backend
    plugins:
      - request_headers:
          set: { x-env: prod, x-client: "$client_ip", x-who: "$consumer|$route|$host|$scheme|$upstream" }
          add: { x-tag: "two" }
          remove: [x-debug]
      - response_headers:
          set: { strict-transport-security: "max-age=31536000", x-route: "$route", x-price: "$$5" }
          remove: [server, x-powered-by]
"#,
        "plugins:\n  - request_headers: { add: { x-tag: one } }\n",
    );
    let r = fetch(
        &client(),
        "GET",
        &gw.url("/x"),
        &[
            ("x-debug", "1"),
            ("x-env", "dev"),
            ("x-client", "forged"),
            ("host", "Api.Example.COM."),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
    assert_eq!(r.header("x-route"), Some("api"));
    assert_eq!(r.header("x-price"), Some("$5"));
    assert!(r.header("server").is_none() && r.header("x-powered-by").is_none());

    let seen = &origin.requests()[0];
    assert!(seen.header("x-debug").is_none());
    assert_eq!(
        seen.header_all("x-env"),
        ["prod"],
        "set replaces the client's value"
    );
    assert_eq!(seen.header("x-client"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-who"),
        Some("|api|api.example.com|http|backend")
    );
    assert_eq!(
        seen.header_all("x-tag"),
        ["one", "two"],
        "global plugins run first, and add appends"
    );
}

#[tokio::test]
async fn redirects_to_https_and_by_regex_keep_the_query() {
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        r#"
  - name: old
    match: { path_prefix: /old/ }
    upstream: backend
    plugins:
      - redirect: { regex: '^/old/(?P<rest>.*)$', replacement: '/new/${rest}', status: 301 }
  - name: local
    match: { path_prefix: /r/ }
    upstream: backend
    plugins:
      - redirect: { regex: '^/r(.*)$', replacement: '/$1' }
  - name: local-with-url
    match: { path_prefix: /q/ }
    upstream: backend
    plugins:
      - redirect: { regex: '^/q(.*)$', replacement: '/$1?from=https://old.example' }
  - name: secure
    match: { path_prefix: /secure/ }
    upstream: backend
    plugins:
      - redirect: { https: true, status: 308 }
  - name: port
    match: { path_prefix: /port/ }
    upstream: backend
    plugins:
      - redirect: { https: true, https_port: 8443 }
"#,
        "",
    );
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = fetch(&c, "GET", &gw.url("/old/a/b?x=1"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/new/a/b?x=1"));
    let r = fetch(
        &c,
        "POST",
        &gw.url("/secure/p?q=2"),
        &[("host", "Shop.Example.com:80")],
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/secure/p?q=2"),
        "the normalized host, without the plain port"
    );
    let r = fetch(&c, "GET", &gw.url("/port/"), &[("host", "a.example")]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://a.example:8443/port/"));
    let r = fetch(&c, "GET", &gw.url("/r/evil.example/x"), &[]).await;
    assert_eq!(
        r.status, 400,
        "a capture cannot make the target //evil.example"
    );
    assert!(r.header("location").is_none());
    assert_eq!(origin.count(), 0, "redirects are answered by the gateway");
}

#[tokio::test]
async fn rewrite_changes_the_upstream_path_and_keeps_it_inside_the_root() {
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        r#"
  - name: api
    match: { path_prefix: /api/ }
    upstream: backend
    plugins:
      - rewrite: { regex: '^/api/v1/(.*)$', replacement: '/v1/$1' }
      - rewrite: { regex: '^/api/up/(.*)$', replacement: '/../$1' }
"#,
        "",
    );
    let c = client();
    let r = fetch(&c, "GET", &gw.url("/api/v1/users/7?full=1"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests()[0].target, "/v1/users/7?full=1");
    let r = fetch(&c, "GET", &gw.url("/api/other"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        origin.requests()[1].target,
        "/api/other",
        "no match, no change"
    );
    let r = fetch(&c, "GET", &gw.url("/api/up/etc/passwd"), &[]).await;
    assert_eq!(r.status, 400, "a rewrite cannot climb above the root");
    assert_eq!(origin.count(), 2);
}
