//! The admin listener against DNS rebinding and token guessing: a `Host` that is not an IP
//! literal, `localhost` or an `allowed_hosts` name is refused (403) on every endpoint, a
//! request without `Host` is let through, the bearer token is compared exactly (same-length
//! and prefix guesses fail), and a non-loopback admin address requires a token.

use super::server_section;
use crate::harness::raw_http::RawResponse;
use crate::harness::{check_config, free_port, GatewayProcess, OriginReply, RawConn, RawOrigin};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(3);

/// A gateway whose `admin:` section has `extra` lines, with a caching route to a raw origin
/// (so that PURGE has something to refuse to purge).
async fn site(extra: &str) -> (GatewayProcess, RawOrigin) {
    let origin = RawOrigin::start().await;
    origin.reply_for(
        "/pg",
        OriginReply::new(200, "cached\n").header("Cache-Control", "max-age=60"),
    );
    let gw = GatewayProcess::start(&format!(
        r#"{server}listeners:
  - address: {{listen}}
admin:
  address: "{{admin}}"
{extra}upstreams:
  origin:
    servers: [{{ address: {origin} }}]
routes:
  - name: all
    match: {{ path_prefix: / }}
    upstream: origin
    cache: {{ enabled: true }}
"#,
        server = server_section(),
        origin = origin.addr,
    ));
    (gw, origin)
}

/// One request on a fresh admin connection: `host` None sends no `Host` at all.
async fn admin(
    gw: &GatewayProcess,
    method: &str,
    path: &str,
    host: Option<&str>,
    auth: Option<&str>,
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut conn = RawConn::connect(gw.admin).await;
    conn.send(req.as_bytes()).await.expect("send to admin");
    conn.read_response(LIMIT)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} (Host {host:?}): {e}"))
}

/// The PURGE got past the Host and token checks: the purge itself answered, `{"purged": N}`
/// with 200, or 404 when nothing matched (the entry is cached under the site's host, not the
/// admin's).
fn assert_purge_ran(r: &RawResponse, what: &str) {
    let doc: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
    let purged = doc.as_ref().and_then(|d| d["purged"].as_u64());
    assert!(
        matches!(r.status, 200 | 404) && purged.is_some(),
        "{what}: {r:?} {:?}",
        String::from_utf8_lossy(&r.body)
    );
}

/// `GET path` through the public listener, `Host: gateway.test`; returns the cache status.
async fn public_get(gw: &GatewayProcess, path: &str) -> RawResponse {
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    conn.read_response(LIMIT).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_are_refused_on_every_admin_endpoint() {
    let (gw, origin) = site("").await;
    // An entry a rebinding page would like to purge.
    assert_eq!(public_get(&gw, "/pg").await.status, 200);
    let hit = public_get(&gw, "/pg").await;
    assert_eq!(hit.header("x-cache-status"), Some("HIT"), "{hit:?}");
    assert_eq!(origin.count(), 1);

    for host in [
        "evil.example",
        "evil.example:80",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
    ] {
        for (method, path) in [
            ("GET", "/status"),
            ("GET", "/metrics"),
            ("GET", "/health"),
            ("GET", "/ready"),
            ("PURGE", "/pg"),
            ("DELETE", "/cache"),
        ] {
            let r = admin(&gw, method, path, Some(host), None).await;
            assert_eq!(
                r.status,
                403,
                "{method} {path} with Host {host}: {:?} {:?}",
                r.status_line,
                String::from_utf8_lossy(&r.body)
            );
            assert!(
                !String::from_utf8_lossy(&r.body).contains("upstreams"),
                "a refused request leaked the status document"
            );
        }
    }
    // Nothing was purged: still a hit, the origin asked once.
    let hit = public_get(&gw, "/pg").await;
    assert_eq!(
        hit.header("x-cache-status"),
        Some("HIT"),
        "a refused PURGE purged: {hit:?}"
    );
    assert_eq!(origin.count(), 1, "{}", origin.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_localhost_and_no_host_are_allowed() {
    let (gw, _origin) = site("").await;
    let port = gw.admin.port();
    let with_port = format!("127.0.0.1:{port}");
    let localhost_port = format!("localhost:{port}");
    let v6_port = format!("[::1]:{port}");
    for host in [
        Some(with_port.as_str()),
        Some("127.0.0.1"),
        Some("localhost"),
        Some(localhost_port.as_str()),
        Some("[::1]"),
        Some(v6_port.as_str()),
        None,
    ] {
        for path in ["/status", "/metrics", "/health"] {
            let r = admin(&gw, "GET", path, host, None).await;
            assert_eq!(r.status, 200, "GET {path} with Host {host:?}: {r:?}");
        }
        let r = admin(&gw, "GET", "/status", host, None).await;
        let doc: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
        assert_eq!(doc["ready"], true, "{doc}");
        let r = admin(&gw, "PURGE", "/pg", host, None).await;
        assert_purge_ran(&r, &format!("PURGE with Host {host:?}"));
    }
    // HTTP/1.0 without Host, as `curl -0` or a probe script sends it.
    let mut conn = RawConn::connect(gw.admin).await;
    conn.send(b"GET /status HTTP/1.0\r\n\r\n").await.unwrap();
    let r = conn.read_response(LIMIT).await.unwrap();
    assert_eq!(r.status, 200, "HTTP/1.0 without Host: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_names_are_accepted_and_others_still_refused() {
    let (gw, _origin) = site("  allowed_hosts: [ops.internal]\n").await;
    for host in ["ops.internal", "ops.internal:9090", "OPS.Internal"] {
        let r = admin(&gw, "GET", "/status", Some(host), None).await;
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
    }
    for host in ["evil.example", "ops.internal.evil.example", "xops.internal"] {
        let r = admin(&gw, "GET", "/status", Some(host), None).await;
        assert_eq!(r.status, 403, "Host {host}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_must_match_exactly() {
    let (gw, _origin) = site("  token: s3cret\n").await;
    let host = Some("127.0.0.1");
    for (auth, want) in [
        (None, 401),
        (Some("Bearer s3creX"), 401),  // same length, last byte wrong
        (Some("Bearer x3cret"), 401),  // same length, first byte wrong
        (Some("Bearer s3cre"), 401),   // a prefix of the token
        (Some("Bearer s3cret2"), 401), // the token as a prefix
        (Some("Bearer "), 401),
        (Some("s3cret"), 401), // no scheme
        (Some("Bearer s3cret"), 200),
    ] {
        for path in ["/status", "/metrics"] {
            let r = admin(&gw, "GET", path, host, auth).await;
            assert_eq!(
                r.status, want,
                "GET {path} with Authorization {auth:?}: {r:?}"
            );
        }
        let r = admin(&gw, "PURGE", "/pg", host, auth).await;
        if want == 200 {
            assert_purge_ran(&r, "PURGE with the token");
        } else {
            assert_eq!(r.status, want, "PURGE with Authorization {auth:?}: {r:?}");
        }
    }
    // Liveness stays open without the token; a foreign Host is refused even with it.
    assert_eq!(admin(&gw, "GET", "/health", host, None).await.status, 200);
    let r = admin(
        &gw,
        "GET",
        "/status",
        Some("evil.example"),
        Some("Bearer s3cret"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn a_public_admin_address_requires_a_token() {
    let port = free_port();
    let yaml = |admin_extra: &str| {
        format!(
            "listeners:
  - address: \"127.0.0.1:{}\"
admin:
  address: \"0.0.0.0:{port}\"
{admin_extra}routes:
  - name: fixed
    match: {{ path_prefix: / }}
    respond: {{ status: 200, body: ok }}
",
            free_port()
        )
    };
    let (ok, out, _, _dir) = check_config(&yaml(""));
    assert!(!ok, "0.0.0.0 admin without a token was accepted: {out}");
    assert!(
        out.contains("admin.address"),
        "the error does not name admin.address: {out}"
    );
    let (ok, out, _, _dir) = check_config(&yaml("  token: \"\"\n"));
    assert!(!ok, "0.0.0.0 admin with an empty token was accepted: {out}");
    assert!(out.contains("admin.address"), "{out}");
    let (ok, out, _, _dir) = check_config(&yaml("  token: s3cret\n"));
    assert!(ok, "0.0.0.0 admin with a token was refused: {out}");
}
