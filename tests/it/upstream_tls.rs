//! TLS to the upstream: SNI, certificate verification, ALPN h2, Host, and health checks over TLS.

use crate::harness::{client, wait_until, GatewayProcess, TlsUpstream};
use std::net::SocketAddr;
use std::time::Duration;

/// The name the origin's self-signed certificate is issued for, and the SNI the gateway sends.
const SNI: &str = "origin.test";

/// A gateway with one upstream `origin` at `addr` speaking TLS with `tls` (a YAML flow map),
/// `extra` upstream keys, and a catch-all route with `route_extra` keys.
fn gateway(addr: SocketAddr, tls: &str, extra: &str, route_extra: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  origin:
    servers: [{{ address: "{addr}" }}]
    tls: {tls}
{extra}
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: origin
{route_extra}
"#
    ))
}

/// `GET path` through the gateway; asserts 200 and returns the origin's JSON echo.
async fn echo(gw: &GatewayProcess, path: &str) -> serde_json::Value {
    let resp = client()
        .get(gw.url(path))
        .send()
        .await
        .expect("request through the gateway");
    let status = resp.status();
    let body = resp.text().await.expect("response body");
    assert_eq!(status, 200, "GET {path}: body {body:?}\nlog:\n{}", gw.log());
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("echo is JSON ({e}): {body:?}"))
}

/// Asserts the gateway log holds no panic.
fn assert_no_panic(gw: &GatewayProcess) {
    let log = gw.log();
    assert!(!log.contains("panicked"), "the gateway panicked:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_gets_the_configured_sni_over_http1() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(origin.addr, "{ sni: origin.test, verify: false }", "", "");

    for i in 0..3 {
        let body = echo(&gw, &format!("/hello/{i}?x=1")).await;
        assert_eq!(body["sni"], SNI, "{body}");
        assert_eq!(body["version"], "HTTP/1.1", "{body}");
        assert_eq!(body["alpn"], "http/1.1", "{body}");
        assert_eq!(body["method"], "GET");
        assert_eq!(body["path"], format!("/hello/{i}?x=1"));
        // preserve_host defaults to true: the client's Host goes upstream, not the SNI.
        assert_eq!(body["host"], gw.addr.to_string(), "{body}");
    }
    let resp = client()
        .post(gw.url("/submit"))
        .body("payload")
        .send()
        .await
        .expect("POST through the gateway");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("echo is JSON");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["sni"], SNI);
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_true_negotiates_http2_with_the_origin() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(
        origin.addr,
        "{ sni: origin.test, verify: false, h2: true }",
        "",
        "",
    );

    for i in 0..3 {
        let resp = client()
            .get(gw.url(&format!("/h2/{i}?q=v")))
            .send()
            .await
            .expect("request through the gateway");
        // The client still talks HTTP/1.1 to the gateway; only the upstream leg is h2.
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        assert_eq!(resp.status(), 200, "log:\n{}", gw.log());
        let body: serde_json::Value = resp.json().await.expect("echo is JSON");
        assert_eq!(body["version"], "HTTP/2.0", "{body}");
        assert_eq!(body["alpn"], "h2", "{body}");
        assert_eq!(body["sni"], SNI, "{body}");
        assert_eq!(body["path"], format!("/h2/{i}?q=v"));
        // The client's Host becomes the h2 :authority.
        assert_eq!(body["authority"], gw.addr.to_string(), "{body}");
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_true_refuses_a_self_signed_origin_with_502() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  strict:
    servers: [{{ address: "{a}" }}]
    retries: 0
    tls: {{ sni: origin.test, verify: true }}
  lax:
    servers: [{{ address: "{a}" }}]
    tls: {{ sni: origin.test, verify: false }}
routes:
  - name: strict
    match: {{ path_prefix: /strict }}
    upstream: strict
  - name: lax
    match: {{ path_prefix: / }}
    upstream: lax
"#,
        a = origin.addr
    ));

    let c = client();
    for i in 0..3 {
        let resp = c
            .get(gw.url(&format!("/strict/{i}")))
            .send()
            .await
            .expect("the gateway answers");
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("error body");
        assert_eq!(
            status,
            502,
            "request {i}: body {body:?}\nlog:\n{}",
            gw.log()
        );
        assert!(!body.is_empty(), "the 502 has a body");
    }
    assert!(
        origin.connections() >= 3,
        "the gateway did try the origin: {} connections",
        origin.connections()
    );
    assert_eq!(
        origin.hits(),
        0,
        "no request crossed an unverified TLS link"
    );

    // The gateway keeps serving, over TLS too.
    let body = echo(&gw, "/after").await;
    assert_eq!(body["sni"], SNI);
    assert_eq!(origin.hits(), 1);
    let mut gw = gw;
    assert!(gw.is_running(), "the gateway is still running");
    assert_no_panic(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_true_with_default_retries_is_still_502() {
    // One backend, `retries: 1` (the default): the retry finds no other backend to try. The
    // client should still learn that the upstream was bad (502), not that none was healthy.
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(origin.addr, "{ sni: origin.test, verify: true }", "", "");
    let resp = client()
        .get(gw.url("/strict"))
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let body = resp.text().await.expect("error body");
    assert_eq!(
        origin.hits(),
        0,
        "no request crossed an unverified TLS link"
    );
    let mut gw = gw;
    assert!(gw.is_running(), "the gateway is still running");
    assert_no_panic(&gw);
    assert_eq!(
        status,
        502,
        "a certificate failure on the only backend: body {body:?}\nlog:\n{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_host_false_sends_the_sni_as_host() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(
        origin.addr,
        "{ sni: origin.test, verify: false }",
        "",
        "    preserve_host: false",
    );
    let body = echo(&gw, "/host").await;
    assert_eq!(body["host"], SNI, "{body}");
    assert_eq!(body["sni"], SNI, "{body}");
    assert_eq!(body["version"], "HTTP/1.1");

    // Over h2 the rewritten Host becomes the :authority.
    let origin2 = TlsUpstream::start(SNI).await;
    let gw2 = gateway(
        origin2.addr,
        "{ sni: origin.test, verify: false, h2: true }",
        "",
        "    preserve_host: false",
    );
    let body = echo(&gw2, "/host").await;
    assert_eq!(body["version"], "HTTP/2.0", "{body}");
    assert_eq!(body["authority"], SNI, "{body}");
    assert!(
        body["host"].is_null() || body["host"] == SNI,
        "Host, when sent besides :authority, is the SNI too: {body}"
    );
}

/// `healthy` of the first backend of `origin` in admin `/status`.
async fn healthy(gw: &GatewayProcess) -> Option<bool> {
    gw.status().await["upstreams"]["origin"]["backends"][0]["healthy"].as_bool()
}

/// Waits for the backend's health to become `want`.
async fn wait_healthy(gw: &GatewayProcess, want: bool) {
    let ok = wait_until(Duration::from_secs(5), || async {
        healthy(gw).await == Some(want)
    })
    .await;
    assert!(
        ok,
        "backend health should become {want}, is {:?}\nlog:\n{}",
        healthy(gw).await,
        gw.log()
    );
}

/// Asserts the backend stays healthy across `n` more health checks, counted by `seen`.
async fn assert_stays_healthy(gw: &GatewayProcess, n: usize, seen: impl Fn() -> usize) {
    let start = seen();
    let checked = wait_until(Duration::from_secs(5), || async { seen() >= start + n }).await;
    assert!(
        checked,
        "only {} health checks reached the origin in 5 s",
        seen() - start
    );
    // With unhealthy_threshold 1 a single failed check would already have ejected it.
    assert_eq!(
        healthy(gw).await,
        Some(true),
        "health checks over TLS fail\nlog:\n{}",
        gw.log()
    );
}

/// After the origin stops the backend is ejected and requests fail fast; it comes back when
/// the origin does.
async fn eject_and_restore(gw: &GatewayProcess, origin: TlsUpstream) {
    let addr = origin.stop();
    wait_healthy(gw, false).await;
    let resp = client()
        .get(gw.url("/down"))
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    assert!(status == 502 || status == 503, "status {status}");

    let origin = TlsUpstream::start_at(SNI, addr).await;
    wait_healthy(gw, true).await;
    let body = echo(gw, "/back").await;
    assert_eq!(body["sni"], SNI);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_over_tls() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(
        origin.addr,
        "{ sni: origin.test, verify: false }",
        "    health_check: { type: tcp, interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1 }",
        "",
    );
    assert_eq!(
        gw.status().await["upstreams"]["origin"]["health_checked"],
        true
    );
    // A TLS TCP check completes a handshake each time; count connections so that a check the
    // gateway aborts mid-handshake still counts as a check.
    assert_stays_healthy(&gw, 3, || origin.connections()).await;
    assert!(
        origin.handshakes() >= 3,
        "the TCP check does TLS handshakes: {} of {} connections",
        origin.handshakes(),
        origin.connections()
    );
    let body = echo(&gw, "/via-tcp-checked").await;
    assert_eq!(body["sni"], SNI);
    eject_and_restore(&gw, origin).await;
    assert_no_panic(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_check_over_tls() {
    let origin = TlsUpstream::start(SNI).await;
    let gw = gateway(
        origin.addr,
        "{ sni: origin.test, verify: false, h2: true }",
        "    health_check: { type: http, path: /health, interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1 }",
        "",
    );
    assert_stays_healthy(&gw, 3, || origin.health_checks()).await;
    let check = origin
        .last_health()
        .expect("a health check request was seen");
    assert_eq!(check["sni"], SNI, "{check}");
    assert_eq!(check["host"], SNI, "{check}");
    assert_eq!(check["method"], "GET");
    assert_eq!(check["path"], "/health");
    let body = echo(&gw, "/via-http-checked").await;
    assert_eq!(body["version"], "HTTP/2.0");
    eject_and_restore(&gw, origin).await;
    assert_no_panic(&gw);
}
