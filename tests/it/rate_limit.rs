//! Rate limits (accuracy, burst, headers, keys, global default, trusted proxies) and the
//! per-route concurrency cap.

use crate::harness::{client, client_from, wait_until, GatewayProcess, TestUpstream};
use std::time::Duration;

/// A gateway over one upstream `backend`; `routes` is the YAML list under `routes:` and `top`
/// extra top-level keys.
fn gateway(up: &TestUpstream, routes: &str, top: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  backend:
    servers: [{{ address: "{}" }}]
routes:
{routes}
{top}
"#,
        up.addr
    ))
}

/// GET `url`, optionally with `X-Forwarded-For`; returns the status and the response headers.
async fn get(
    c: &reqwest::Client,
    url: &str,
    xff: Option<&str>,
) -> (u16, reqwest::header::HeaderMap) {
    let mut req = c.get(url);
    if let Some(xff) = xff {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.expect("request through the gateway");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    resp.bytes().await.expect("response body");
    (status, headers)
}

/// A header's value as an integer.
fn num(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_key_gets_its_rate_plus_burst_and_other_keys_are_unaffected() {
    const RPS: u64 = 20;
    const BURST: u64 = 10;
    const SECS: u64 = 10;
    // The flood: 4 senders at 50 req/s each, staggered, 200 req/s in all (10x the limit).
    const SENDERS: u64 = 4;
    const SENDER_GAP: Duration = Duration::from_millis(20);
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        &format!(
            "  - name: api
    match: {{ path_prefix: / }}
    upstream: backend
    rate_limit: {{ requests_per_second: {RPS}, burst: {BURST}, key: \"header:x-key\" }}"
        ),
        "",
    );
    let c = client();
    let url = gw.url("/api/x");
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let per_sender = SECS * 1000 / SENDER_GAP.as_millis() as u64;
    let mut flood = Vec::new();
    for s in 0..SENDERS {
        let (c, url) = (c.clone(), url.clone());
        flood.push(tokio::spawn(async move {
            let offset = SENDER_GAP / SENDERS as u32 * s as u32;
            let (mut admitted, mut rejected) = (0u64, 0u64);
            for i in 0..per_sender {
                tokio::time::sleep_until(start + offset + SENDER_GAP * i as u32).await;
                let resp = c.get(&url).header("x-key", "flood").send().await.unwrap();
                match resp.status().as_u16() {
                    200 => admitted += 1,
                    429 => rejected += 1,
                    other => panic!("flood request answered {other}"),
                }
                resp.bytes().await.unwrap();
            }
            (admitted, rejected)
        }));
    }
    // A second key at half its rate, paced after each answer, for the same 10 s.
    let calm = {
        let (c, url) = (c.clone(), url.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start).await;
            let mut statuses = Vec::new();
            for _ in 0..SECS * RPS / 2 {
                let resp = c.get(&url).header("x-key", "calm").send().await.unwrap();
                statuses.push(resp.status().as_u16());
                resp.bytes().await.unwrap();
                tokio::time::sleep(Duration::from_millis(2000 / RPS)).await;
            }
            statuses
        })
    };
    let (mut admitted, mut sent) = (0, 0);
    for f in flood {
        let (a, r) = f.await.expect("flood sender");
        admitted += a;
        sent += a + r;
    }
    let elapsed = start.elapsed();
    let calm = calm.await.expect("calm sender");

    assert_eq!(sent, SENDERS * per_sender);
    let expected = (RPS * SECS + BURST) as f64;
    assert!(
        (admitted as f64 - expected).abs() <= expected * 0.10,
        "admitted {admitted} of {sent} in {elapsed:?}; expected {expected} ± 10%"
    );
    assert_eq!(calm.len() as u64, SECS * RPS / 2);
    assert!(
        calm.iter().all(|&s| s == 200),
        "the calm key was limited: {calm:?}"
    );
    assert_eq!(
        up.hits() as u64,
        admitted + calm.len() as u64,
        "rejected requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_is_admitted_at_once_then_rejections_carry_retry_after_and_ratelimit_headers() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: api
    match: { path_prefix: / }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 3 }",
        "",
    );
    let c = client();
    // The first request plus `burst` more pass at once, each reporting what is left.
    for i in 0..4u64 {
        let (status, h) = get(&c, &gw.url("/x"), None).await;
        assert_eq!(status, 200, "request {i} of the burst");
        assert_eq!(num(&h, "ratelimit-limit"), Some(1), "{h:?}");
        assert_eq!(num(&h, "ratelimit-remaining"), Some(3 - i), "{h:?}");
        assert!(num(&h, "ratelimit-reset").is_some_and(|r| r >= 1), "{h:?}");
        assert!(h.get("retry-after").is_none(), "{h:?}");
    }
    let resp = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    let retry_after = num(&h, "retry-after").expect("integer Retry-After");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(num(&h, "ratelimit-limit"), Some(1), "{h:?}");
    assert_eq!(num(&h, "ratelimit-remaining"), Some(0), "{h:?}");
    let reset = num(&h, "ratelimit-reset").expect("RateLimit-Reset");
    assert!((1..=4).contains(&reset), "RateLimit-Reset {reset}");
    assert!(h.get("x-upstream").is_none());
    assert!(
        !resp.text().await.unwrap().is_empty(),
        "the rejection has a body"
    );
    assert_eq!(
        up.hits(),
        4,
        "the rejected request never reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_can_be_switched_off_and_the_rejection_status_configured() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: quiet
    match: { path_prefix: / }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 0, headers: false, status: 503 }",
        "",
    );
    let c = client();
    let (status, h) = get(&c, &gw.url("/x"), None).await;
    assert_eq!(status, 200);
    for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(
            h.get(name).is_none(),
            "admitted response carries {name}: {h:?}"
        );
    }
    let resp = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 503, "configured rejection status");
    let h = resp.headers().clone();
    assert!(num(&h, "retry-after").is_some_and(|r| r >= 1), "{h:?}");
    assert_eq!(
        num(&h, "ratelimit-remaining"),
        Some(0),
        "rejections keep their headers"
    );
    assert!(resp.text().await.unwrap().contains("rate limit"));
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_keys_separate_clients_and_route_key_shares_one_bucket() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: per-ip
    match: { path_prefix: /ip }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 0, key: client_ip }
  - name: shared
    match: { path_prefix: /shared }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 1, key: route }",
        "",
    );
    let (two, three, four) = (client_from(2), client_from(3), client_from(4));
    assert_eq!(get(&two, &gw.url("/ip"), None).await.0, 200);
    assert_eq!(get(&two, &gw.url("/ip"), None).await.0, 429);
    assert_eq!(
        get(&three, &gw.url("/ip"), None).await.0,
        200,
        "another client IP has its own bucket"
    );

    // One bucket (1 + burst 1) for the whole route, whoever asks.
    assert_eq!(get(&two, &gw.url("/shared"), None).await.0, 200);
    assert_eq!(get(&three, &gw.url("/shared"), None).await.0, 200);
    assert_eq!(get(&four, &gw.url("/shared"), None).await.0, 429);
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_rate_limit_applies_to_routes_without_their_own_including_respond_routes() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: own
    match: { path_prefix: /own }
    upstream: backend
    rate_limit: { requests_per_second: 1000, burst: 100 }
  - name: fixed
    match: { path: /fixed }
    respond: { status: 200, body: fixed }
  - name: default
    match: { path_prefix: / }
    upstream: backend",
        "rate_limit:
  requests_per_second: 1
  burst: 0
  key: client_ip",
    );
    let c = client();
    let (status, h) = get(&c, &gw.url("/x"), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        num(&h, "ratelimit-limit"),
        Some(1),
        "the global limit: {h:?}"
    );
    assert_eq!(get(&c, &gw.url("/x"), None).await.0, 429);

    for i in 0..5 {
        let (status, h) = get(&c, &gw.url("/own/x"), None).await;
        assert_eq!(status, 200, "request {i} on the route with its own limit");
        assert_eq!(num(&h, "ratelimit-limit"), Some(1000), "{h:?}");
    }

    let resp = c.get(gw.url("/fixed")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(num(resp.headers(), "ratelimit-limit"), Some(1));
    assert_eq!(resp.text().await.unwrap(), "fixed");
    let (status, h) = get(&c, &gw.url("/fixed"), None).await;
    assert_eq!(status, 429, "respond routes are limited too");
    assert!(num(&h, "retry-after").is_some(), "{h:?}");
    assert_eq!(up.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_rejects_over_the_cap_and_recovers() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: capped
    match: { path_prefix: / }
    upstream: backend
    max_in_flight: 2",
        "",
    );
    let c = client();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), gw.url("/slow?ms=1500"));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(5), || async { up.inflight() == 2 }).await,
        "two slow requests should be in flight"
    );
    let resp = c.get(gw.url("/x")).send().await.unwrap();
    assert_eq!(resp.status(), 503, "a third request is over the cap");
    assert!(num(resp.headers(), "retry-after").is_some_and(|r| r >= 1));
    assert!(resp.text().await.unwrap().contains("in flight"));
    assert_eq!(
        up.hits(),
        2,
        "the rejected request never reached the upstream"
    );

    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    for i in 0..3 {
        let (status, _) = get(&c, &gw.url("/x"), None).await;
        assert_eq!(status, 200, "request {i} after the slow ones finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_ignored_without_trusted_proxies() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: api
    match: { path_prefix: / }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 0, key: client_ip }",
        "",
    );
    let c = client();
    assert_eq!(get(&c, &gw.url("/x"), Some("1.1.1.1")).await.0, 200);
    assert_eq!(
        get(&c, &gw.url("/x"), Some("2.2.2.2")).await.0,
        429,
        "a different X-Forwarded-For from the same peer shares the peer's bucket"
    );
    assert_eq!(
        get(&client_from(2), &gw.url("/x"), Some("1.1.1.1")).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_key() {
    let up = TestUpstream::start("a").await;
    let gw = gateway(
        &up,
        "  - name: api
    match: { path_prefix: / }
    upstream: backend
    rate_limit: { requests_per_second: 1, burst: 0, key: client_ip }",
        "trusted_proxies: [127.0.0.0/8]",
    );
    let c = client();
    assert_eq!(get(&c, &gw.url("/x"), Some("1.1.1.1")).await.0, 200);
    assert_eq!(
        get(&c, &gw.url("/x"), Some("2.2.2.2")).await.0,
        200,
        "another forwarded client has its own bucket"
    );
    assert_eq!(
        get(&c, &gw.url("/x"), Some("1.1.1.1, 127.0.0.5")).await.0,
        429,
        "trusted hops are skipped: keyed as 1.1.1.1"
    );
    assert_eq!(
        get(&c, &gw.url("/x"), Some("9.9.9.9, 2.2.2.2")).await.0,
        429,
        "entries left of the right-most untrusted one are not believed: keyed as 2.2.2.2"
    );
    assert_eq!(
        get(&c, &gw.url("/x"), None).await.0,
        200,
        "without X-Forwarded-For the peer is the key"
    );
    assert_eq!(up.hits(), 3);
}
