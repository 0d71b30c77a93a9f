//! Passive health: outlier ejection from live traffic, its return after the cool-down, and
//! connect failures retried on another backend.

use crate::harness::raw_http::get_request;
use crate::harness::{
    client, free_addr, wait_until, Fault, FaultyUpstream, GatewayProcess, RawConn, TestUpstream,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A gateway with one round-robin upstream `pool` over `servers` and a catch-all route.
fn gateway(servers: &[SocketAddr], extra: &str) -> GatewayProcess {
    let servers: Vec<String> = servers
        .iter()
        .map(|a| format!("address: \"{a}\""))
        .collect();
    GatewayProcess::start_with_pool(
        &servers,
        &format!("    load_balancing: round_robin\n{extra}"),
    )
}

/// `ejected` of each backend of `pool` in admin `/status`, in config order.
async fn ejected(gw: &GatewayProcess) -> Vec<bool> {
    let status = gw.status().await;
    status["upstreams"]["pool"]["backends"]
        .as_array()
        .expect("pool backends in /status")
        .iter()
        .map(|b| {
            b["ejected"]
                .as_bool()
                .unwrap_or_else(|| panic!("no ejected flag in /status: {status}"))
        })
        .collect()
}

/// GET a fresh path on one keep-alive connection; returns the status and the `x-upstream`
/// that answered. The gateway settles each request (a success is recorded when its body is
/// done) before it reads the next from the connection, so outcomes are recorded in order.
async fn get(conn: &mut RawConn, i: usize) -> (u16, String) {
    conn.send(get_request(&format!("/x/{i}")).as_bytes())
        .await
        .expect("send a request");
    let resp = conn
        .read_response(Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("request {i}: {e}"));
    let who = resp.header("x-upstream").unwrap_or_default().to_string();
    (resp.status, who)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_is_ejected_and_returns_after_the_cooldown() {
    let good = TestUpstream::start("good").await;
    let bad = TestUpstream::start("bad").await;
    let gw = gateway(
        &[good.addr, bad.addr],
        "    retries: 0
    passive_health: { consecutive_failures: 3, cooldown_ms: 1500 }",
    );
    bad.set_fail_status(Some(503));
    let mut conn = RawConn::connect(gw.addr).await;
    // Round robin alternates; the bad backend answers 503 until its third failure ejects it.
    let mut i = 0;
    while bad.hits() < 3 {
        assert!(i < 10, "the bad backend got {} of {i} requests", bad.hits());
        match get(&mut conn, i).await {
            (200, who) if who == "good" => {}
            (503, who) if who == "bad" => {}
            other => panic!("request {i}: {other:?}"),
        }
        i += 1;
    }
    let ejected_at = Instant::now();
    assert_eq!(ejected(&gw).await, [false, true]);

    // All traffic goes to the other backend, with no failures.
    for j in 0..20 {
        assert_eq!(
            get(&mut conn, 100 + j).await,
            (200, "good".into()),
            "request {j}"
        );
    }
    assert_eq!(bad.hits(), 3, "no request reached the ejected backend");

    // It comes back after the cool-down and, healthy again, serves.
    bad.set_fail_status(None);
    let back = wait_until(Duration::from_secs(5), || async {
        ejected(&gw).await == [false, false]
    })
    .await;
    assert!(back, "the backend never returned from ejection");
    assert!(
        ejected_at.elapsed() >= Duration::from_millis(1200),
        "returned after {:?}, before the 1500 ms cool-down",
        ejected_at.elapsed()
    );
    let mut served = 0;
    for j in 0..10 {
        let (status, who) = get(&mut conn, 200 + j).await;
        assert_eq!(status, 200, "request {j} after the return");
        served += usize::from(who == "bad");
    }
    assert!(served >= 4, "the returned backend served {served} of 10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_failing_backend_is_ejected_again_after_its_return() {
    let good = TestUpstream::start("good").await;
    let bad = TestUpstream::start("bad").await;
    let gw = gateway(
        &[good.addr, bad.addr],
        "    retries: 0
    passive_health: { consecutive_failures: 2, cooldown_ms: 800, failure_statuses: [500] }",
    );
    // Only the configured statuses count: 503 is not one of them here.
    bad.set_fail_status(Some(503));
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..8 {
        get(&mut conn, i).await;
    }
    assert_eq!(bad.hits(), 4);
    assert_eq!(ejected(&gw).await, [false, false]);

    bad.set_fail_status(Some(500));
    let mut i = 0;
    while bad.hits() < 6 {
        assert!(i < 10, "the bad backend got {} requests", bad.hits());
        get(&mut conn, 100 + i).await;
        i += 1;
    }
    assert_eq!(ejected(&gw).await, [false, true]);
    let back = wait_until(Duration::from_secs(5), || async {
        ejected(&gw).await == [false, false]
    })
    .await;
    assert!(back, "the backend never returned from ejection");
    // Still failing: two more failures eject it again.
    let mut i = 0;
    while bad.hits() < 8 {
        assert!(i < 10, "the returned backend got {} requests", bad.hits());
        get(&mut conn, 200 + i).await;
        i += 1;
    }
    assert_eq!(ejected(&gw).await, [false, true]);
    for j in 0..10 {
        assert_eq!(get(&mut conn, 300 + j).await, (200, "good".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_the_healthy_backend_and_eject_the_dead_one() {
    let dead = free_addr();
    let live = TestUpstream::start("live").await;
    let gw = gateway(
        &[dead, live.addr],
        "    retries: 1
    passive_health: { consecutive_failures: 2, cooldown_ms: 60000 }",
    );
    let mut conn = RawConn::connect(gw.addr).await;
    for i in 0..10 {
        assert_eq!(get(&mut conn, i).await, (200, "live".into()), "request {i}");
    }
    assert_eq!(live.hits(), 10);
    assert_eq!(ejected(&gw).await, [true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_cuts_its_responses_short_is_ejected() {
    let good = TestUpstream::start("good").await;
    let cut = FaultyUpstream::start(Fault::CloseMidBody).await;
    let gw = gateway(
        &[good.addr, cut.addr],
        "    retries: 0
    passive_health: { consecutive_failures: 2, cooldown_ms: 60000 }",
    );
    let c = client();
    let mut conn = RawConn::connect(gw.addr).await;
    // Its truncated 200s are resets in live traffic: two in a row eject it.
    let mut i = 0;
    while cut.accepted() < 2 {
        assert!(
            i < 6,
            "the cutting backend got {} of {i} requests",
            cut.accepted()
        );
        let resp = c.get(gw.url(&format!("/x/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        let _ = resp.bytes().await; // cut short by one backend, whole from the other
        i += 1;
    }
    let ejected_now = wait_until(Duration::from_secs(2), || async {
        ejected(&gw).await == [false, true]
    })
    .await;
    assert!(
        ejected_now,
        "two responses cut short left the backends at ejected = {:?}",
        ejected(&gw).await
    );
    for j in 0..10 {
        assert_eq!(
            get(&mut conn, 100 + j).await,
            (200, "good".into()),
            "request {j}"
        );
    }
    assert_eq!(cut.accepted(), 2);
}
