//! The per-upstream circuit breaker: every transition, fail-fast answers and their latency,
//! both triggers, which faults count as failures, and its state on the admin listener.

use crate::harness::raw_http::get_request;
use crate::harness::{
    client, free_addr, wait_until, Fault, FaultyUpstream, GatewayProcess, RawConn, TestUpstream,
};
use std::time::{Duration, Instant};

/// A gateway with upstream `pool` over `server` guarded by `circuit_breaker: {breaker}` and a
/// catch-all route. Passive ejection is off: with one backend it would hide the breaker.
fn gateway(server: &str, breaker: &str) -> GatewayProcess {
    GatewayProcess::start_with_pool(
        &[format!("address: \"{server}\"")],
        &format!("    passive_health: {{ enabled: false }}\n    circuit_breaker: {{ {breaker} }}"),
    )
}

/// The breaker's `(state, transitions)` of upstream `name` in admin `/status`.
async fn breaker(gw: &GatewayProcess, name: &str) -> (String, u64) {
    let status = gw.status().await;
    let cb = &status["upstreams"][name]["circuit_breaker"];
    (
        cb["state"]
            .as_str()
            .unwrap_or_else(|| panic!("no breaker state for {name} in /status: {status}"))
            .to_string(),
        cb["transitions"].as_u64().expect("breaker transitions"),
    )
}

/// GET `path`; returns the status and whether an upstream answered (`x-upstream`).
async fn get(c: &reqwest::Client, gw: &GatewayProcess, path: &str) -> (u16, bool) {
    let resp = c
        .get(gw.url(path))
        .send()
        .await
        .expect("the gateway answers");
    let status = resp.status().as_u16();
    let upstream = resp.headers().contains_key("x-upstream");
    resp.bytes().await.expect("body");
    (status, upstream)
}

/// GET `path` on one keep-alive connection; returns the status and whether an upstream
/// answered. The gateway settles a request (a success is recorded when its body is done) before
/// it reads the next one from the same connection, so outcomes reach the breaker in order.
async fn send(conn: &mut RawConn, path: &str) -> (u16, bool) {
    conn.send(get_request(path).as_bytes())
        .await
        .expect("send a request");
    let resp = conn
        .read_response(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (resp.status, resp.header("x-upstream").is_some())
}

/// Asserts one request is rejected by the open circuit; returns its `Retry-After`.
async fn expect_rejected(c: &reqwest::Client, gw: &GatewayProcess) -> u64 {
    let resp = c
        .get(gw.url("/x"))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(resp.status(), 503);
    assert!(
        resp.headers().get("x-upstream").is_none(),
        "the upstream answered"
    );
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .expect("integer Retry-After");
    let body = resp.text().await.unwrap();
    assert!(body.contains("circuit open"), "body {body:?}");
    assert!(body.len() < 64, "a short body: {body:?}");
    assert!(retry_after >= 1);
    retry_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_open_the_circuit_and_rejections_are_fast() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up.addr.to_string(),
        "failure_threshold: 3, failure_rate: 0, open_seconds: 30",
    );
    let c = client();
    let mut conn = RawConn::connect(gw.addr).await;
    assert_eq!(breaker(&gw, "pool").await, ("closed".into(), 0));
    // Only a run of configured failure statuses counts: a success or a 500 breaks it.
    for (path, status) in [
        ("/status/503", 503),
        ("/status/502", 502),
        ("/x", 200),
        ("/status/504", 504),
        ("/status/503", 503),
        ("/status/500", 500),
        ("/status/503", 503),
        ("/status/503", 503),
    ] {
        assert_eq!(send(&mut conn, path).await, (status, true), "{path}");
    }
    assert_eq!(breaker(&gw, "pool").await, ("closed".into(), 0));
    assert_eq!(send(&mut conn, "/status/503").await, (503, true));
    assert_eq!(breaker(&gw, "pool").await, ("open".into(), 1));
    let hits = up.hits();
    assert_eq!(hits, 9);

    // The very next request is rejected without touching the upstream.
    let retry_after = expect_rejected(&c, &gw).await;
    assert!(retry_after <= 30, "Retry-After {retry_after}");
    assert_eq!(up.hits(), hits);

    // Fail-fast latency on one keep-alive connection.
    let mut times = Vec::new();
    for i in 0..50 {
        let started = Instant::now();
        conn.send(get_request("/x").as_bytes()).await.unwrap();
        let resp = conn
            .read_response(Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("rejection {i}: {e}"));
        times.push(started.elapsed());
        assert_eq!(resp.status, 503, "rejection {i}");
        assert!(resp.header("retry-after").is_some());
    }
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(5),
        "median round trip of a rejection {median:?} (max {:?})",
        times[times.len() - 1]
    );
    assert_eq!(up.hits(), hits, "no rejected request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_probes_after_open_seconds_a_failed_probe_reopens_a_good_one_closes() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up.addr.to_string(),
        "failure_threshold: 3, failure_rate: 0, open_seconds: 0.5, half_open_requests: 1",
    );
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &gw, "/status/503").await, (503, true));
    }
    let opened = Instant::now();
    assert_eq!(breaker(&gw, "pool").await, ("open".into(), 1));
    assert_eq!(
        expect_rejected(&c, &gw).await,
        1,
        "open_seconds 0.5 rounds up"
    );

    // After open_seconds the next request goes through as the probe; it fails: open again.
    let before = up.hits();
    let probed = wait_until(Duration::from_secs(3), || async {
        get(&c, &gw, "/status/503").await;
        up.hits() > before
    })
    .await;
    assert!(probed, "no probe within 3 s of opening");
    assert!(
        opened.elapsed() >= Duration::from_millis(400),
        "probed {:?} after opening, before open_seconds",
        opened.elapsed()
    );
    assert_eq!(up.hits(), before + 1, "one probe only");
    assert_eq!(breaker(&gw, "pool").await, ("open".into(), 3));
    expect_rejected(&c, &gw).await;

    // The next probe is slow and succeeds; while it runs the circuit is half-open and every
    // other request is still rejected.
    let reopened = Instant::now();
    let before = up.hits();
    let deadline = Instant::now() + Duration::from_secs(3);
    let probe = loop {
        assert!(Instant::now() < deadline, "no second probe within 3 s");
        let task = {
            let (c, url) = (c.clone(), gw.url("/slow?ms=600"));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        };
        let settled = wait_until(Duration::from_secs(2), || async {
            task.is_finished() || up.hits() > before
        })
        .await;
        assert!(settled, "a request neither rejected nor forwarded");
        if up.hits() > before {
            break task;
        }
        assert_eq!(task.await.unwrap(), 503);
    };
    assert!(reopened.elapsed() >= Duration::from_millis(400));
    assert_eq!(breaker(&gw, "pool").await, ("half_open".into(), 4));
    assert_eq!(expect_rejected(&c, &gw).await, 1);
    assert_eq!(up.hits(), before + 1, "one probe only while half-open");
    assert_eq!(probe.await.unwrap(), 200);
    // A success is recorded once its response is complete, just after the client has it.
    let closed = wait_until(Duration::from_secs(2), || async {
        breaker(&gw, "pool").await == ("closed".into(), 5)
    })
    .await;
    assert!(
        closed,
        "after a good probe: {:?}",
        breaker(&gw, "pool").await
    );
    for _ in 0..3 {
        assert_eq!(get(&c, &gw, "/x").await, (200, true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_rate_over_the_window_opens_the_circuit() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up.addr.to_string(),
        "failure_threshold: 0, failure_rate: 0.5, minimum_requests: 10, window_seconds: 10, \
         open_seconds: 30",
    );
    let c = client();
    let mut conn = RawConn::connect(gw.addr).await;
    // Alternating success and failure: never two failures in a row, half of them failing.
    for i in 0..9 {
        let path = if i % 2 == 0 { "/x" } else { "/status/502" };
        assert!(
            send(&mut conn, path).await.1,
            "request {i} reaches the upstream"
        );
    }
    assert_eq!(
        breaker(&gw, "pool").await,
        ("closed".into(), 0),
        "fewer than minimum_requests"
    );
    assert_eq!(send(&mut conn, "/status/502").await, (502, true));
    assert_eq!(breaker(&gw, "pool").await, ("open".into(), 1));
    expect_rejected(&c, &gw).await;
    assert_eq!(up.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_resets_and_timeouts_count_as_failures() {
    let slow = TestUpstream::start("slow").await;
    let reset = FaultyUpstream::start(Fault::ResetOnAccept).await;
    let dead = free_addr();
    let pool = |name: &str, addr: String, read_ms: u64| {
        format!(
            "  {name}:
    servers: [{{ address: \"{addr}\" }}]
    retries: 0
    passive_health: {{ enabled: false }}
    timeouts: {{ connect_ms: 500, read_ms: {read_ms} }}
    circuit_breaker: {{ failure_threshold: 3, failure_rate: 0, open_seconds: 30 }}
"
        )
    };
    let gw = GatewayProcess::start(&format!(
        "listeners:
  - address: \"{{listen}}\"
upstreams:
{}{}{}routes:
  - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead }}
  - {{ name: reset, match: {{ path_prefix: /reset }}, upstream: reset }}
  - {{ name: slow, match: {{ path_prefix: / }}, upstream: slow }}
",
        pool("dead", dead.to_string(), 1000),
        pool("reset", reset.addr.to_string(), 1000),
        pool("slow", slow.addr.to_string(), 200),
    ));
    let c = client();
    for (name, path, status) in [
        ("dead", "/dead", 502),
        ("reset", "/reset", 502),
        ("slow", "/slow?ms=1500", 504),
    ] {
        for i in 0..3 {
            assert_eq!(
                get(&c, &gw, path).await,
                (status, false),
                "{name}: failure {i}"
            );
        }
        assert_eq!(breaker(&gw, name).await, ("open".into(), 1), "{name}");
        let resp = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{name}: rejected while open");
        assert!(resp.text().await.unwrap().contains("circuit open"));
    }
    assert_eq!(reset.accepted(), 3);
    assert_eq!(slow.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_resets_after_the_response_header_count_as_failures() {
    // The header arrives at once, then the body stalls past read_ms, or the origin closes the
    // connection mid-body: the client gets a truncated 200, and the upstream failed all the same.
    let drip = FaultyUpstream::start(Fault::SlowDrip {
        body_len: 10,
        gap: Duration::from_millis(400),
    })
    .await;
    let cut = FaultyUpstream::start(Fault::CloseMidBody).await;
    let pool = |name: &str, f: &FaultyUpstream| {
        format!(
            "  {name}:
    servers: [{{ address: \"{}\" }}]
    retries: 0
    passive_health: {{ enabled: false }}
    timeouts: {{ read_ms: 200 }}
    circuit_breaker: {{ failure_threshold: 3, failure_rate: 0, open_seconds: 30 }}
",
            f.addr
        )
    };
    let gw = GatewayProcess::start(&format!(
        "listeners:
  - address: \"{{listen}}\"
upstreams:
{}{}routes:
  - {{ name: drip, match: {{ path_prefix: /drip }}, upstream: drip }}
  - {{ name: cut, match: {{ path_prefix: /cut }}, upstream: cut }}
",
        pool("drip", &drip),
        pool("cut", &cut),
    ));
    let c = client();
    for name in ["drip", "cut"] {
        let url = gw.url(&format!("/{name}"));
        for i in 0..3 {
            let resp = c.get(&url).send().await.expect("the gateway answers");
            assert_eq!(
                resp.status(),
                200,
                "{name} {i}: the header was already sent"
            );
            assert!(
                resp.bytes().await.is_err(),
                "{name} {i}: the body is cut short"
            );
        }
        let opened = wait_until(Duration::from_secs(2), || async {
            breaker(&gw, name).await.0 == "open"
        })
        .await;
        assert!(
            opened,
            "{name}: three failed upstream responses left the breaker {:?}",
            breaker(&gw, name).await
        );
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 503, "{name}: rejected while open");
    }
    assert_eq!(drip.accepted(), 3);
    assert_eq!(cut.accepted(), 3);
}
