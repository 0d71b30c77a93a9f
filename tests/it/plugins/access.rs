//! `ip_restriction` and `cors`.

use super::gateway;
use crate::harness::{assert_metrics, client, client_from, fetch, RawOrigin};

#[tokio::test]
async fn ip_restriction_allows_denies_and_deny_wins() {
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        r#"
  - name: api
    match: { path_prefix: /api/ }
    upstream: backend
    plugins:
      - ip_restriction: { allow: [127.0.0.0/29], deny: [127.0.0.3], status: 451 }
  - name: open
    match: { path_prefix: / }
    upstream: backend
"#,
        "plugins:\n  - ip_restriction: { deny: [127.0.0.9/32] }\n",
    );
    let ok = fetch(&client_from(1), "GET", &gw.url("/api/x"), &[]).await;
    assert_eq!(ok.status, 200, "127.0.0.1 is allowed");
    let denied = fetch(&client_from(3), "GET", &gw.url("/api/x"), &[]).await;
    assert_eq!(
        denied.status, 451,
        "deny wins over allow, with the configured status"
    );
    let outside = fetch(&client_from(8), "GET", &gw.url("/api/x"), &[]).await;
    assert_eq!(outside.status, 451, "127.0.0.8 is not in the allow list");
    assert_eq!(
        fetch(&client_from(8), "GET", &gw.url("/other"), &[])
            .await
            .status,
        200,
        "another route has no allow list"
    );
    let global = fetch(&client_from(9), "GET", &gw.url("/other"), &[]).await;
    assert_eq!(
        global.status, 403,
        "the global deny list applies to every route"
    );
    assert_eq!(
        origin.count(),
        2,
        "only admitted requests reach the origin: {:?}",
        origin.targets()
    );
    // Metrics are recorded when the request ends, just after the client has its answer.
    assert_metrics(
        &gw,
        &[
            (r#"avx_errors_total{kind="forbidden",route="api"}"#, 2.0),
            (r#"avx_errors_total{kind="forbidden",route="open"}"#, 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn ip_restriction_sees_the_client_behind_trusted_proxies_only() {
    let origin = RawOrigin::start().await;
    let routes = r#"
  - name: all
    match: { path_prefix: / }
    upstream: backend
    plugins:
      - ip_restriction: { deny: [203.0.113.0/24] }
"#;
    let behind = gateway(&origin, routes, "trusted_proxies: [127.0.0.0/8]\n");
    let xff = [("x-forwarded-for", "203.0.113.7")];
    let r = fetch(&client(), "GET", &behind.url("/"), &xff).await;
    assert_eq!(r.status, 403, "the client behind a trusted proxy is denied");
    let r = fetch(
        &client(),
        "GET",
        &behind.url("/"),
        &[("x-forwarded-for", "198.51.100.1")],
    )
    .await;
    assert_eq!(r.status, 200);

    let direct = gateway(&origin, routes, "");
    let r = fetch(&client(), "GET", &direct.url("/"), &xff).await;
    assert_eq!(
        r.status, 200,
        "an untrusted peer cannot pick its client IP with X-Forwarded-For"
    );
}

const CORS: &str = r#"
  - name: get-only
    match: { path_prefix: /get-only, methods: [GET] }
    upstream: backend
  - name: upload
    match: { path_prefix: /upload, methods: [POST] }
    upstream: backend
    plugins:
      - cors: { allow_origins: ["https://app.example.com"], allow_methods: [POST] }
  - name: api
    match: { path_prefix: / }
    upstream: backend
    plugins:
      # Listed before cors: phases, not file order, decide (cors answers preflights first).
      - key_auth:
          consumers: [{ name: alice, key_sha256: "KEY" }]
      - cors:
          allow_origins: ["https://app.example.com", "https://*.example.org"]
          allow_methods: [GET, POST]
          allow_headers: [authorization, content-type]
          expose_headers: [x-request-id]
          allow_credentials: true
          max_age_seconds: 600
"#;

#[tokio::test]
async fn cors_answers_preflights_before_authentication() {
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &CORS.replace("KEY", &super::sha256_hex("k1")), "");
    let c = client();
    let pre = |origin_hdr: &'static str, method: &'static str, headers: &'static str| {
        let c = c.clone();
        let url = gw.url("/items");
        async move {
            fetch(
                &c,
                "OPTIONS",
                &url,
                &[
                    ("origin", origin_hdr),
                    ("access-control-request-method", method),
                    ("access-control-request-headers", headers),
                ],
            )
            .await
        }
    };
    let ok = pre(
        "https://a.example.org",
        "POST",
        "Content-Type, Authorization",
    )
    .await;
    assert_eq!(ok.status, 204, "an allowed preflight needs no API key");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://a.example.org")
    );
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(ok.header("vary").unwrap_or("").contains("Origin"));
    assert!(
        ok.header("content-length").is_none(),
        "no Content-Length on a 204"
    );

    for (o, m, h, why) in [
        ("https://evil.example.com", "GET", "", "origin"),
        (
            "https://a.b.example.org",
            "GET",
            "",
            "two labels under the wildcard",
        ),
        ("https://app.example.com", "DELETE", "", "method"),
        ("https://app.example.com", "GET", "x-secret", "header"),
    ] {
        let r = pre(o, m, h).await;
        assert_eq!(
            r.status, 403,
            "a preflight with a disallowed {why} is refused"
        );
        assert!(r.header("access-control-allow-origin").is_none());
    }
    // A POST-only route: its preflight (an OPTIONS) is routed by the method it asks about.
    let r = fetch(
        &c,
        "OPTIONS",
        &gw.url("/upload"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    )
    .await;
    assert_eq!(r.status, 204, "the preflight found the POST route");
    assert_eq!(r.header("access-control-allow-methods"), Some("POST"));
    // A route without cors keeps `methods:` as an allowlist: an OPTIONS dressed as a
    // preflight is routed as an OPTIONS, so it never reaches the GET-only route's backend;
    // here the catch-all api route, which has cors, answers it.
    let r = fetch(
        &c,
        "OPTIONS",
        &gw.url("/get-only"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(
        r.status, 204,
        "answered by the api route's cors, not proxied by get-only"
    );
    assert_eq!(origin.count(), 0, "preflights never reach the origin");

    // Actual requests: authenticated as usual, with the CORS fields on the proxied answer.
    let r = fetch(
        &c,
        "GET",
        &gw.url("/items"),
        &[("origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(r.status, 401, "CORS does not replace authentication");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com"),
        "the 401 carries the CORS fields, so the page's script can read it"
    );
    let r = fetch(
        &c,
        "GET",
        &gw.url("/items"),
        &[("origin", "https://app.example.com"), ("x-api-key", "k1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert!(r.all("vary").iter().any(|v| v.contains("Origin")));
    let r = fetch(
        &c,
        "GET",
        &gw.url("/items"),
        &[("origin", "https://evil.example.com"), ("x-api-key", "k1")],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "CORS is enforced by the browser, not by refusing requests"
    );
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(
        r.all("vary").iter().any(|v| v.contains("Origin")),
        "Vary: Origin either way"
    );
}
