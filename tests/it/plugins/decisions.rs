//! Plugin answers in the access log's `decision` and in `avx_errors_total{kind}`, beyond
//! `unauthorized` (auth.rs): `forbidden` (ip_restriction), `bad_request` (a rewrite out of the
//! root), `plugin_unavailable` (forward_auth to a dead service, or one answering 5xx, counted as
//! kind `connect`) and `plugin_answered` (a redirect, a forward_auth 404: not errors); and a
//! forward_auth 401 and 403 under their own kinds.

use super::{access_log, access_log_lines, gateway, metrics_text};
use crate::harness::{assert_metrics, client_from, fetch, refused_addr, OriginReply, RawOrigin};

#[tokio::test]
async fn plugin_refusals_are_logged_with_their_decision_and_counted_by_kind() {
    // The auth service answers by the client's path, which it gets in X-Forwarded-Uri.
    let auth = RawOrigin::start_with(|req| {
        let uri = req.header("x-forwarded-uri").unwrap_or("");
        match uri.strip_prefix("/fa/").unwrap_or("") {
            "401" => OriginReply::new(401, "").header("www-authenticate", "Bearer"),
            "403" => OriginReply::new(403, "no"),
            "404" => OriginReply::new(404, "no such tenant"),
            _ => OriginReply::new(502, "auth backend down\n"),
        }
    })
    .await;
    let origin = RawOrigin::start().await;
    let routes = format!(
        r#"
  - name: ip
    match: {{ path_prefix: /ip/ }}
    upstream: backend
    plugins:
      - ip_restriction: {{ deny: [127.0.0.7] }}
  - name: rw
    match: {{ path_prefix: /rw/ }}
    upstream: backend
    plugins:
      - rewrite: {{ regex: '^/rw/(.*)$', replacement: '/../$1' }}
  - name: fa-dead
    match: {{ path_prefix: /fa-dead/ }}
    upstream: backend
    plugins:
      - forward_auth: {{ url: "http://{dead}/verify", timeout_ms: 300 }}
  - name: fa
    match: {{ path_prefix: /fa/ }}
    upstream: backend
    plugins:
      - forward_auth: {{ url: "http://{auth}/verify", timeout_ms: 1000 }}
  - name: moved
    match: {{ path_prefix: /moved/ }}
    upstream: backend
    plugins:
      - redirect: {{ regex: '^/moved/(.*)$', replacement: '/new/$1', status: 302 }}
"#,
        dead = refused_addr(2),
        auth = auth.addr,
    );
    let gw = gateway(&origin, &routes, &access_log("json"));
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    let admitted = fetch(&client_from(1), "GET", &gw.url("/ip/ok"), &[]).await;
    assert_eq!(admitted.status, 200);
    let forbidden = fetch(&client_from(7), "GET", &gw.url("/ip/denied"), &[]).await;
    assert_eq!(forbidden.status, 403);
    let bad = fetch(&c, "GET", &gw.url("/rw/etc/passwd"), &[]).await;
    assert_eq!(bad.status, 400);
    let dead = fetch(&c, "GET", &gw.url("/fa-dead/x"), &[]).await;
    assert_eq!(dead.status, 503, "fail closed");
    let five = fetch(&c, "GET", &gw.url("/fa/5xx"), &[]).await;
    assert_eq!(
        five.status, 502,
        "the auth service's answer, passed through"
    );
    assert_eq!(five.text(), "auth backend down\n");
    for code in [401, 403, 404] {
        let r = fetch(&c, "GET", &gw.url(&format!("/fa/{code}")), &[]).await;
        assert_eq!(r.status, code, "passed through");
    }
    let moved = fetch(&c, "GET", &gw.url("/moved/a"), &[]).await;
    assert_eq!(moved.status, 302);
    assert_eq!(moved.header("location"), Some("/new/a"));
    assert_eq!(
        origin.targets(),
        ["GET /ip/ok"],
        "nothing refused or answered reached the origin"
    );
    assert_eq!(auth.count(), 4, "{}", auth.describe());

    let lines = access_log_lines(&gw, 9).await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for (path, route, status, decision) in [
        ("/ip/ok", "ip", 200, None),
        ("/ip/denied", "ip", 403, Some("forbidden")),
        ("/rw/etc/passwd", "rw", 400, Some("bad_request")),
        ("/fa-dead/x", "fa-dead", 503, Some("plugin_unavailable")),
        ("/fa/5xx", "fa", 502, Some("plugin_unavailable")),
        ("/fa/401", "fa", 401, Some("unauthorized")),
        ("/fa/403", "fa", 403, Some("forbidden")),
        ("/fa/404", "fa", 404, Some("plugin_answered")),
        ("/moved/a", "moved", 302, Some("plugin_answered")),
    ] {
        let l = parsed
            .iter()
            .find(|l| l["path"] == path)
            .unwrap_or_else(|| panic!("no line for {path}:\n{lines:#?}"));
        assert_eq!(l["route"], route, "{l}");
        assert_eq!(l["status"], status, "{l}");
        assert_eq!(l["decision"], serde_json::json!(decision), "{l}");
        assert_eq!(l["consumer"], serde_json::Value::Null, "{l}");
    }
    let denied_ip = parsed.iter().find(|l| l["path"] == "/ip/denied");
    assert_eq!(
        denied_ip.map(|l| l["client_ip"].clone()),
        Some(serde_json::json!("127.0.0.7"))
    );

    // The metric kinds (docs/plugins.md#rejections): an unreachable or failing auth service is
    // a dependency that could not answer, `connect`; a redirect or a 404 is not an error.
    assert_metrics(
        &gw,
        &[
            (r#"avx_errors_total{kind="forbidden",route="ip"}"#, 1.0),
            (r#"avx_errors_total{kind="bad_request",route="rw"}"#, 1.0),
            (r#"avx_errors_total{kind="connect",route="fa-dead"}"#, 1.0),
            (r#"avx_errors_total{kind="connect",route="fa"}"#, 1.0),
            (r#"avx_errors_total{kind="unauthorized",route="fa"}"#, 1.0),
            (r#"avx_errors_total{kind="forbidden",route="fa"}"#, 1.0),
        ],
    )
    .await;
    let text = metrics_text(&gw).await;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("avx_errors_total{"))
        .collect();
    assert_eq!(
        errors.len(),
        6,
        "only the six series above (the redirect and the 404 are not errors): {errors:?}"
    );
    assert!(
        !text.contains("plugin_unavailable"),
        "plugin_unavailable is a decision, not a metric kind"
    );
}
