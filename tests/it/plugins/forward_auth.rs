//! `forward_auth` against real loopback auth services: allow with copied headers, a denial
//! passed through, a silent service (timeout) and a dead one (both 503).

use super::gateway;
use crate::harness::{client, fetch, refused_addr, wait_metric, OriginReply, RawOrigin};
use std::time::{Duration, Instant};

fn routes(auth: &str, silent: &str, dead: &str) -> String {
    format!(
        r#"
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
    plugins:
      - forward_auth:
          url: http://{auth}/verify?from=gw
          timeout_ms: 500
          request_headers: [authorization]
          upstream_headers: [x-user]
          consumer_header: x-user
  - name: silent
    match: {{ path_prefix: /silent/ }}
    upstream: backend
    plugins:
      - forward_auth: {{ url: "http://{silent}/verify", timeout_ms: 300 }}
  - name: dead
    match: {{ path_prefix: /dead/ }}
    upstream: backend
    plugins:
      - forward_auth: {{ url: "http://{dead}/verify", timeout_ms: 300 }}
"#
    )
}

#[tokio::test]
async fn forward_auth_allows_denies_and_fails_closed() {
    let auth = RawOrigin::start_with(|req| match req.header("authorization") {
        Some("Bearer good") => OriginReply::new(200, "")
            .header("x-user", "alice")
            .header("x-internal", "not copied"),
        Some("Bearer login") => OriginReply::new(302, "").header("location", "/login"),
        _ => OriginReply::new(403, "nope\n")
            .header("content-type", "text/plain")
            .header("x-reason", "bad token"),
    })
    .await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        &routes(
            &auth.addr.to_string(),
            &silent_addr.to_string(),
            &refused_addr(0).to_string(),
        ),
        "",
    );
    let c = client();

    let r = fetch(
        &c,
        "POST",
        &gw.url("/api/x?q=1"),
        &[
            ("authorization", "Bearer good"),
            ("x-user", "forged"),
            ("cookie", "c=1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let up = &origin.requests()[0];
    assert_eq!(
        up.header_all("x-user"),
        ["alice"],
        "copied from the answer, the forged one gone"
    );
    assert!(
        up.header("x-internal").is_none(),
        "only upstream_headers are copied"
    );
    let asked = &auth.requests()[0];
    assert_eq!(asked.method, "GET");
    assert_eq!(asked.target, "/verify?from=gw");
    assert_eq!(asked.header("authorization"), Some("Bearer good"));
    assert_eq!(asked.header("x-forwarded-method"), Some("POST"));
    assert_eq!(asked.header("x-forwarded-uri"), Some("/api/x?q=1"));
    assert_eq!(
        asked.header("x-forwarded-host"),
        Some(gw.addr.to_string().as_str())
    );
    assert_eq!(asked.header("x-forwarded-proto"), Some("http"));
    assert!(
        asked.header("cookie").is_none(),
        "only request_headers are sent"
    );
    assert!(
        wait_metric(
            &gw,
            r#"avx_consumer_requests_total{consumer="other",route="api"}"#,
            1.0
        )
        .await,
        "the consumer from x-user is counted, as `other` (not a configured name)"
    );

    let r = fetch(
        &c,
        "GET",
        &gw.url("/api/x"),
        &[("authorization", "Bearer bad")],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), "nope\n");
    assert_eq!(r.header("x-reason"), Some("bad token"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = fetch(
        &reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        "GET",
        &gw.url("/api/x"),
        &[("authorization", "Bearer login")],
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/login"));

    for path in ["/silent/x", "/dead/x"] {
        let start = Instant::now();
        let r = fetch(&c, "GET", &gw.url(path), &[]).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{path}: {:?}",
            start.elapsed()
        );
    }
    assert_eq!(
        origin.count(),
        1,
        "only the allowed request reached the origin"
    );
    held.abort();
}
