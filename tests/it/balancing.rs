//! How each load-balancing algorithm spreads requests over real backends.

use crate::harness::{client, wait_until, GatewayProcess, TestUpstream};
use std::collections::BTreeMap;
use std::time::Duration;

/// A gateway with one upstream `pool` over `servers` (address, weight) and a catch-all route.
fn gateway(balancing: &str, servers: &[(&TestUpstream, usize)]) -> GatewayProcess {
    let servers: Vec<String> = servers
        .iter()
        .map(|(u, w)| format!("address: \"{}\", weight: {w}", u.addr))
        .collect();
    GatewayProcess::start_with_pool(&servers, balancing)
}

/// Sends `GET path` with optional headers; returns the `x-upstream` that answered.
async fn served_by(c: &reqwest::Client, url: String, headers: &[(&str, &str)]) -> String {
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request through the gateway");
    assert_eq!(resp.status(), 200);
    let who = resp
        .headers()
        .get("x-upstream")
        .expect("x-upstream header")
        .to_str()
        .expect("x-upstream is text")
        .to_string();
    resp.bytes().await.expect("response body");
    who
}

/// Sends `n` requests to `/` and counts which upstream answered each.
async fn tally(gw: &GatewayProcess, n: usize) -> BTreeMap<String, usize> {
    let c = client();
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let who = served_by(&c, gw.url(&format!("/r/{i}")), &[]).await;
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &BTreeMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = gateway("    load_balancing: round_robin", &[(&a, 3), (&b, 1)]);
    let counts = tally(&gw, 400).await;
    let (na, nb) = (count(&counts, "a"), count(&counts, "b"));
    assert_eq!(na + nb, 400, "{counts:?}");
    assert!(
        (270..=330).contains(&na),
        "a should get ~300 of 400: {counts:?}"
    );
    assert!(
        (70..=130).contains(&nb),
        "b should get ~100 of 400: {counts:?}"
    );
    assert_eq!((a.hits(), b.hits()), (na, nb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_with_equal_weights_alternates() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let c = TestUpstream::start("c").await;
    // round_robin is the default algorithm.
    let gw = gateway("", &[(&a, 1), (&b, 1), (&c, 1)]);
    let counts = tally(&gw, 90).await;
    for name in ["a", "b", "c"] {
        let n = count(&counts, name);
        assert!((27..=33).contains(&n), "{name} should get ~30: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_according_to_weights() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let gw = gateway("    load_balancing: random", &[(&a, 3), (&b, 1)]);
    let counts = tally(&gw, 400).await;
    let (na, nb) = (count(&counts, "a"), count(&counts, "b"));
    assert_eq!(na + nb, 400, "{counts:?}");
    // Expected 300/100; the bounds are about seven standard deviations wide.
    assert!((240..=360).contains(&na), "a should get ~75%: {counts:?}");
    assert!(nb >= 40, "b should get ~25%: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_a_header_is_sticky_and_spreads_keys() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let gw = gateway(
        "    load_balancing: consistent_hash\n    hash_key: \"header:x-user\"",
        &[(&ups[0], 1), (&ups[1], 1), (&ups[2], 1)],
    );
    let c = client();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..4 {
        for user in 0..30 {
            let key = format!("user-{user}");
            // The path varies too: only the header matters.
            let url = gw.url(&format!("/p/{round}/{user}"));
            let who = served_by(&c, url, &[("x-user", &key)]).await;
            let first = owner.entry(key.clone()).or_insert_with(|| who.clone());
            assert_eq!(*first, who, "{key} moved between backends in round {round}");
        }
    }
    let used: std::collections::BTreeSet<_> = owner.values().collect();
    assert!(used.len() >= 2, "30 keys all hashed to {used:?}");
    // A request without the key still gets an answer.
    served_by(&c, gw.url("/nokey"), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_the_path_ignores_the_query() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let gw = gateway(
        "    load_balancing: consistent_hash\n    hash_key: path",
        &[(&ups[0], 1), (&ups[1], 1), (&ups[2], 1)],
    );
    let c = client();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..3 {
        for item in 0..30 {
            let path = format!("/items/{item}");
            let url = gw.url(&format!("{path}?round={round}"));
            // A header that a header key would use must not matter here.
            let who = served_by(&c, url, &[("x-user", &format!("u{round}"))]).await;
            let first = owner.entry(path.clone()).or_insert_with(|| who.clone());
            assert_eq!(
                *first, who,
                "{path} moved between backends in round {round}"
            );
        }
    }
    let used: std::collections::BTreeSet<_> = owner.values().collect();
    assert!(used.len() >= 2, "30 paths all hashed to {used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_defaults_to_the_client_ip() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let gw = gateway(
        "    load_balancing: consistent_hash",
        &[(&ups[0], 1), (&ups[1], 1), (&ups[2], 1)],
    );
    // Every request comes from 127.0.0.1, whatever its path, headers or connection.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        let who = served_by(
            &client(),
            gw.url(&format!("/p/{i}")),
            &[("x-user", &format!("u{i}"))],
        )
        .await;
        seen.insert(who);
    }
    assert_eq!(seen.len(), 1, "one client IP, one backend: {seen:?}");
}

/// The gateway's own in-flight count of each backend of `pool`, from admin `/status`.
async fn gateway_inflight(gw: &GatewayProcess) -> Vec<u64> {
    let status = gw.status().await;
    status["upstreams"]["pool"]["backends"]
        .as_array()
        .expect("pool backends in /status")
        .iter()
        .map(|b| b["inflight"].as_u64().expect("inflight count"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_busy_backend() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
    ];
    let gw = gateway(
        "    load_balancing: least_connections",
        &[(&ups[0], 1), (&ups[1], 1)],
    );

    // Idle backends tie, and ties rotate: both share sequential traffic.
    let counts = tally(&gw, 20).await;
    assert!(
        count(&counts, "a") >= 5 && count(&counts, "b") >= 5,
        "idle backends should share load: {counts:?}"
    );

    // One slow request makes one backend busy.
    let slow_url = gw.url("/slow?ms=6000");
    let slow = tokio::spawn(async move { client().get(slow_url).send().await });
    let started = wait_until(Duration::from_secs(5), || async {
        ups.iter().map(TestUpstream::inflight).sum::<usize>() == 1
    })
    .await;
    assert!(started, "the slow request never reached a backend");
    let busy = ups
        .iter()
        .position(|u| u.inflight() == 1)
        .expect("a busy backend");
    let idle = 1 - busy;
    let before = ups[idle].hits();

    // Every new request goes to the other backend while the slow one is in flight.
    let c = client();
    for i in 0..10 {
        // The previous fast request is fully accounted for before the next one is routed.
        let settled = wait_until(Duration::from_secs(5), || async {
            gateway_inflight(&gw).await == [(busy == 0) as u64, (busy == 1) as u64]
        })
        .await;
        assert!(
            settled,
            "gateway in-flight counts: {:?}",
            gateway_inflight(&gw).await
        );
        let who = served_by(&c, gw.url(&format!("/fast/{i}")), &[]).await;
        assert_eq!(who, ups[idle].name, "request {i} went to the busy backend");
    }
    assert_eq!(ups[idle].hits(), before + 10);
    assert_eq!(ups[busy].inflight(), 1, "the slow request is still running");

    // A second slow request also avoids the busy backend.
    let slow_url = gw.url("/slow?ms=6000");
    let slow2 = tokio::spawn(async move { client().get(slow_url).send().await });
    let both = wait_until(Duration::from_secs(5), || async {
        ups[0].inflight() == 1 && ups[1].inflight() == 1
    })
    .await;
    assert!(
        both,
        "second slow request should go to the idle backend: inflight {} / {}",
        ups[0].inflight(),
        ups[1].inflight()
    );
    slow.abort();
    slow2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_weighs_in_flight_requests_by_weight() {
    let ups = [
        TestUpstream::start("heavy").await,
        TestUpstream::start("light").await,
    ];
    let gw = gateway(
        "    load_balancing: least_connections",
        &[(&ups[0], 2), (&ups[1], 1)],
    );
    // Two slow requests, one after the other: the second avoids the first's backend.
    let mut slow = Vec::new();
    for n in 1..=2 {
        let url = gw.url("/slow?ms=6000");
        slow.push(tokio::spawn(async move { client().get(url).send().await }));
        let started = wait_until(Duration::from_secs(5), || async {
            ups.iter().map(TestUpstream::inflight).sum::<usize>() == n
        })
        .await;
        assert!(started, "slow request {n} never reached a backend");
    }
    assert_eq!((ups[0].inflight(), ups[1].inflight()), (1, 1));
    // One in flight each: per unit of weight the heavy backend is less loaded.
    let c = client();
    for i in 0..10 {
        let settled = wait_until(Duration::from_secs(5), || async {
            gateway_inflight(&gw).await == [1, 1]
        })
        .await;
        assert!(
            settled,
            "gateway in-flight counts: {:?}",
            gateway_inflight(&gw).await
        );
        let who = served_by(&c, gw.url(&format!("/fast/{i}")), &[]).await;
        assert_eq!(who, "heavy", "request {i}");
    }
    for s in slow {
        s.abort();
    }
}
