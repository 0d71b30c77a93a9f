//! Active health checks, failing backends and retries on connect failures.

use crate::harness::{client, refused_addr, wait_until, GatewayProcess, TestUpstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A gateway with one upstream `pool` over `servers` (plus `extra` upstream keys) and a
/// catch-all route.
fn gateway(servers: &[SocketAddr], extra: &str) -> GatewayProcess {
    let servers: Vec<String> = servers
        .iter()
        .map(|a| format!("address: \"{a}\""))
        .collect();
    GatewayProcess::start_with_pool(&servers, extra)
}

const HTTP_CHECK: &str = "    health_check:
      type: http
      path: /health
      interval_ms: 100
      timeout_ms: 500
      healthy_threshold: 1
      unhealthy_threshold: 2";

const TCP_CHECK: &str = "    health_check:
      type: tcp
      interval_ms: 100
      timeout_ms: 500
      healthy_threshold: 1
      unhealthy_threshold: 1";

/// `healthy` of each backend of `pool` in admin `/status`, in config order.
async fn health(gw: &GatewayProcess) -> Vec<bool> {
    let status = gw.status().await;
    status["upstreams"]["pool"]["backends"]
        .as_array()
        .expect("pool backends in /status")
        .iter()
        .map(|b| b["healthy"].as_bool().expect("healthy flag"))
        .collect()
}

async fn wait_health(gw: &GatewayProcess, want: &[bool]) {
    let ok = wait_until(Duration::from_secs(5), || async {
        health(gw).await == want
    })
    .await;
    assert!(
        ok,
        "backend health should become {want:?}, is {:?}",
        health(gw).await
    );
}

/// Sends `n` requests; returns how many each of `ups` answered. Every request must succeed.
async fn spread(gw: &GatewayProcess, ups: &[&TestUpstream], n: usize) -> Vec<usize> {
    let c = client();
    let mut counts = vec![0; ups.len()];
    for i in 0..n {
        let resp = c
            .get(gw.url(&format!("/x/{i}")))
            .send()
            .await
            .expect("request through the gateway");
        assert_eq!(resp.status(), 200, "request {i}");
        let who = resp.headers()["x-upstream"].to_str().unwrap().to_string();
        resp.bytes().await.expect("body");
        let idx = ups
            .iter()
            .position(|u| u.name == who)
            .unwrap_or_else(|| panic!("unexpected upstream {who}"));
        counts[idx] += 1;
    }
    counts
}

async fn admin_ready(gw: &GatewayProcess) -> u16 {
    client()
        .get(gw.admin_url("/ready"))
        .send()
        .await
        .expect("GET admin /ready")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_ejects_a_failing_backend_and_restores_it() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = gateway(&[a.addr, b.addr], HTTP_CHECK);

    let checking = wait_until(Duration::from_secs(5), || async {
        a.health_checks() >= 2 && b.health_checks() >= 2
    })
    .await;
    assert!(checking, "health checks never reached the backends");
    let status = gw.status().await;
    assert_eq!(status["upstreams"]["pool"]["health_checked"], true);
    assert_eq!(health(&gw).await, [true, true]);
    assert_eq!(spread(&gw, &[&a, &b], 10).await, [5, 5]);

    a.set_healthy(false);
    wait_health(&gw, &[false, true]).await;
    assert_eq!(spread(&gw, &[&a, &b], 20).await, [0, 20]);
    assert_eq!(admin_ready(&gw).await, 200, "one healthy backend is enough");

    a.set_healthy(true);
    wait_health(&gw, &[true, true]).await;
    let counts = spread(&gw, &[&a, &b], 20).await;
    assert!(
        counts[0] >= 5 && counts[1] >= 5,
        "both serve again: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_ejects_a_stopped_backend_and_restores_it() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = gateway(&[a.addr, b.addr], TCP_CHECK);
    assert_eq!(health(&gw).await, [true, true]);
    assert_eq!(spread(&gw, &[&a, &b], 10).await, [5, 5]);

    let addr = a.stop();
    wait_health(&gw, &[false, true]).await;
    let counts = spread(&gw, &[&b], 20).await;
    assert_eq!(counts, [20]);

    let a = TestUpstream::start_at("a", addr).await;
    wait_health(&gw, &[true, true]).await;
    let counts = spread(&gw, &[&a, &b], 20).await;
    assert!(
        counts[0] >= 5 && counts[1] >= 5,
        "both serve again: {counts:?}"
    );
    assert_eq!(a.hits(), counts[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_only_the_keys_of_an_ejected_backend() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let gw = gateway(
        &[ups[0].addr, ups[1].addr, ups[2].addr],
        &format!(
            "    load_balancing: consistent_hash\n    hash_key: \"header:x-user\"\n{HTTP_CHECK}"
        ),
    );
    let c = client();
    let owners = |c: reqwest::Client, gw_url: String| async move {
        let mut owners = Vec::new();
        for user in 0..30 {
            let resp = c
                .get(&gw_url)
                .header("x-user", format!("user-{user}"))
                .send()
                .await
                .expect("request through the gateway");
            assert_eq!(resp.status(), 200, "user-{user}");
            owners.push(resp.headers()["x-upstream"].to_str().unwrap().to_string());
        }
        owners
    };
    let before = owners(c.clone(), gw.url("/k")).await;
    // Eject the backend that owns the first key.
    let victim = ups
        .iter()
        .position(|u| u.name == before[0])
        .expect("a known backend");
    ups[victim].set_healthy(false);
    let mut want = vec![true; 3];
    want[victim] = false;
    wait_health(&gw, &want).await;

    let during = owners(c.clone(), gw.url("/k")).await;
    for (user, (was, is)) in before.iter().zip(&during).enumerate() {
        if *was == ups[victim].name {
            assert_ne!(*is, *was, "user-{user} still went to the ejected backend");
        } else {
            assert_eq!(is, was, "user-{user} moved although its backend is healthy");
        }
    }

    ups[victim].set_healthy(true);
    wait_health(&gw, &[true, true, true]).await;
    let after = owners(c.clone(), gw.url("/k")).await;
    assert_eq!(
        after, before,
        "keys return to their backend once it is healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_honours_path_expected_status_and_timeout() {
    // Each check path is an ordinary endpoint, so the upstream's hit counter counts checks.
    let ok = TestUpstream::start("ok").await;
    let wrong = TestUpstream::start("wrong").await;
    let slow = TestUpstream::start("slow").await;
    let quick = TestUpstream::start("quick").await;
    let pool = |u: &TestUpstream, path: &str, expected: u16, timeout_ms: u64| {
        format!(
            "  {}:
    servers: [{{ address: \"{}\" }}]
    health_check:
      path: \"{path}\"
      expected_status: {expected}
      interval_ms: 100
      timeout_ms: {timeout_ms}
      healthy_threshold: 1
      unhealthy_threshold: 1
",
            u.name, u.addr
        )
    };
    let gw = GatewayProcess::start(&format!(
        "listeners:
  - address: \"{{listen}}\"
upstreams:
{}{}{}{}routes:
  - {{ name: ok, match: {{ path_prefix: /ok }}, upstream: ok }}
  - {{ name: wrong, match: {{ path_prefix: /wrong }}, upstream: wrong }}
",
        pool(&ok, "/status/204", 204, 1000),
        pool(&wrong, "/status/204", 200, 1000),
        pool(&slow, "/slow?ms=1500", 200, 200),
        pool(&quick, "/slow?ms=1", 200, 1000),
    ));
    let healthy = |status: &serde_json::Value, name: &str| {
        status["upstreams"][name]["backends"][0]["healthy"].as_bool()
    };
    let settled = wait_until(Duration::from_secs(5), || async {
        let status = gw.status().await;
        ok.hits() >= 3
            && quick.hits() >= 3
            && healthy(&status, "wrong") == Some(false)
            && healthy(&status, "slow") == Some(false)
    })
    .await;
    let status = gw.status().await;
    assert!(settled, "checks did not settle: {status}");
    assert_eq!(healthy(&status, "ok"), Some(true), "{status}");
    assert_eq!(healthy(&status, "quick"), Some(true), "{status}");
    assert_eq!(
        status["ready"], false,
        "some upstream has no healthy backend"
    );

    let resp = client().get(gw.url("/ok/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "ok");
    expect_fast_failure_at(&gw, "/wrong/x").await;
}

/// Asserts one request is answered 502 or 503, quickly, with a body.
async fn expect_fast_failure(gw: &GatewayProcess) {
    expect_fast_failure_at(gw, "/x").await
}

async fn expect_fast_failure_at(gw: &GatewayProcess, path: &str) {
    let started = Instant::now();
    let resp = client()
        .get(gw.url(path))
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    assert!(resp.headers().get("x-upstream").is_none());
    let body = resp.text().await.expect("error body");
    let elapsed = started.elapsed();
    assert!(
        status == 502 || status == 503,
        "status {status}, body {body:?}"
    );
    assert!(!body.is_empty(), "the error page has a body");
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_unhealthy_fails_fast() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = gateway(&[a.addr, b.addr], HTTP_CHECK);
    a.set_healthy(false);
    b.set_healthy(false);
    wait_health(&gw, &[false, false]).await;
    assert_eq!(gw.status().await["ready"], false);
    assert_eq!(admin_ready(&gw).await, 503);
    for _ in 0..3 {
        expect_fast_failure(&gw).await;
    }
    assert_eq!(
        a.hits() + b.hits(),
        0,
        "no request reached an unhealthy backend"
    );

    b.set_healthy(true);
    wait_health(&gw, &[false, true]).await;
    assert_eq!(admin_ready(&gw).await, 200);
    assert_eq!(spread(&gw, &[&a, &b], 5).await, [0, 5]);
}

/// Two distinct loopback addresses nothing listens on.
fn dead_addrs() -> (SocketAddr, SocketAddr) {
    (refused_addr(0), refused_addr(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_refusing_fails_fast() {
    let (d1, d2) = dead_addrs();
    // No health check: the gateway only learns on connect, and must still answer quickly.
    let gw = gateway(&[d1, d2], "    retries: 1");
    for _ in 0..3 {
        expect_fast_failure(&gw).await;
    }
    let gw = gateway(&[d1], "    retries: 0");
    expect_fast_failure(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_backend() {
    let (dead, _) = dead_addrs();
    let live = TestUpstream::start("live").await;
    let gw = gateway(
        &[dead, live.addr],
        "    load_balancing: round_robin\n    retries: 1",
    );
    assert_eq!(spread(&gw, &[&live], 20).await, [20]);
    assert_eq!(live.hits(), 20);
    // Without a health check every backend counts as healthy, the dead one included.
    let status = gw.status().await;
    assert_eq!(status["upstreams"]["pool"]["health_checked"], false);
    assert_eq!(health(&gw).await, [true, true]);
    assert_eq!(status["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_connect_failures_are_502() {
    let (dead, _) = dead_addrs();
    let live = TestUpstream::start("live").await;
    let gw = gateway(
        &[dead, live.addr],
        // Passive ejection would take the dead backend out after a few failures; this test
        // is about retries alone.
        "    load_balancing: round_robin\n    retries: 0\n    passive_health: { enabled: false }",
    );
    let c = client();
    let (mut ok, mut failed) = (0, 0);
    for i in 0..20 {
        let resp = c.get(gw.url(&format!("/x/{i}"))).send().await.unwrap();
        match resp.status().as_u16() {
            200 => {
                assert_eq!(resp.headers()["x-upstream"], "live");
                ok += 1;
            }
            502 => {
                assert!(!resp.text().await.unwrap().is_empty(), "502 has a body");
                failed += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // Round robin alternates between the two backends.
    assert!(failed >= 5 && ok >= 5, "ok {ok}, failed {failed}");
    assert_eq!(live.hits(), ok);
}
