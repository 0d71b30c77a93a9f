//! DNS service discovery: upstream servers given as `name:port`, resolved against a real DNS
//! server on loopback whose records the tests change while the gateway runs.

use crate::config_errors::assert_error;
use crate::harness::dns::DnsServer;
use crate::harness::{
    check_config, client, free_port, metric, wait_until, GatewayProcess, TestUpstream, TlsUpstream,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Origins named `names[i]` on `127.0.0.(i + 1)`, all on one port (a DNS name has one port).
async fn origins(names: &[&str]) -> (u16, Vec<TestUpstream>) {
    'port: for _ in 0..20 {
        let port = free_port();
        let mut ups = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = SocketAddr::from(([127, 0, 0, i as u8 + 1], port));
            if std::net::TcpListener::bind(addr).is_err() {
                continue 'port;
            }
            ups.push(TestUpstream::start_at(name, addr).await);
        }
        return (port, ups);
    }
    panic!("no port free on every loopback address");
}

/// A gateway with upstream `pool` = `servers` (flow-mapping bodies), asking `dns` only, and a
/// catch-all route; `keys` are extra upstream lines.
fn gateway(dns: &DnsServer, servers: &[String], keys: &str) -> GatewayProcess {
    GatewayProcess::start_with_pool(
        servers,
        &format!("    dns_servers: [\"{}\"]\n{keys}", dns.addr),
    )
}

/// Sends `n` requests and counts which origin answered each (all must be 200).
async fn tally(gw: &GatewayProcess, n: usize) -> BTreeMap<String, usize> {
    let c = client();
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let resp = c
            .get(gw.url(&format!("/r/{i}")))
            .header("x-user", format!("user-{i}"))
            .send()
            .await
            .expect("request through the gateway");
        assert_eq!(resp.status(), 200, "request {i}");
        let who = resp.headers()["x-upstream"].to_str().unwrap().to_string();
        *counts.entry(who).or_insert(0) += 1;
    }
    counts
}

/// The addresses of the upstream's current backend set, from `/status`.
async fn backend_set(gw: &GatewayProcess) -> Vec<String> {
    let status = gw.status().await;
    let mut set: Vec<String> = status["upstreams"]["pool"]["backends"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|b| b["address"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    set.sort();
    set
}

async fn wait_set(gw: &GatewayProcess, want: &[String], within: Duration) -> bool {
    wait_until(within, || async { backend_set(gw).await == want }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_of_a_name_is_a_backend_with_the_weight_split() {
    let dns = DnsServer::start().await;
    let (port, ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 300);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\", weight: 3")],
        "    load_balancing: round_robin",
    );

    // Weight 3 over two addresses: 2 for the first in address order, 1 for the second.
    let status = gw.status().await;
    let pool = &status["upstreams"]["pool"];
    let weights: Vec<(String, u64)> = pool["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [
            (format!("127.0.0.1:{port}"), 2),
            (format!("127.0.0.2:{port}"), 1)
        ],
        "{status}"
    );
    let name = &pool["dns"]["names"][0];
    assert_eq!(name["name"], format!("svc.test:{port}"), "{status}");
    assert_eq!(
        name["addresses"],
        serde_json::json!([format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")]),
        "{status}"
    );
    assert!(name["last_lookup"].is_string(), "{status}");
    assert!(
        name["last_lookup_unix_ms"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert!(name["last_error"].is_null(), "{status}");

    let counts = tally(&gw, 300).await;
    let (na, nb) = (counts["a"], counts["b"]);
    assert_eq!(na + nb, 300, "{counts:?}");
    assert!((180..=220).contains(&na), "a should get ~2/3: {counts:?}");
    assert_eq!(ups[0].hits() + ups[1].hits(), 300);

    assert_eq!(
        metric(&gw, "avx_upstream_resolved_addresses{upstream=\"pool\"}").await,
        Some(2.0)
    );
    assert!(
        metric(
            &gw,
            "avx_dns_lookups_total{result=\"ok\",upstream=\"pool\"}"
        )
        .await
            >= Some(1.0)
    );
    assert!(
        metric(
            &gw,
            &format!("avx_backend_in_flight{{backend=\"127.0.0.2:{port}\",upstream=\"pool\"}}")
        )
        .await
            == Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_spreads_over_the_resolved_addresses() {
    let dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 300);
    for alg in [
        "round_robin",
        "random",
        "least_connections",
        "consistent_hash\n    hash_key: \"header:x-user\"",
    ] {
        let gw = gateway(
            &dns,
            &[format!("address: \"svc.test:{port}\"")],
            &format!("    load_balancing: {alg}"),
        );
        let counts = tally(&gw, 60).await;
        assert!(
            counts.get("a") >= Some(&5) && counts.get("b") >= Some(&5),
            "{alg}: {counts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_name_is_the_host_sent_when_the_client_host_is_not_preserved() {
    let dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a"]).await;
    dns.set("svc.test", &["127.0.0.1"], 300);
    let gw = GatewayProcess::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\nupstreams:\n  pool:\n    dns_servers: [\"{}\"]\n    servers: [{{ address: \"svc.test:{port}\" }}]\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: pool, preserve_host: false }}\n",
        dns.addr
    ));
    let echo: serde_json::Value = client()
        .get(gw.url("/echo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        echo["headers"]["host"],
        format!("svc.test:{port}"),
        "{echo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_address_joins_and_a_removed_one_leaves_after_its_requests_finish() {
    let dns = DnsServer::start().await;
    let (port, ups) = origins(&["a", "b"]).await;
    let (a, b) = (format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}"));
    dns.set("svc.test", &["127.0.0.1"], 1);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 1",
    );
    assert_eq!(tally(&gw, 10).await.get("b"), None);

    // Added: in the set within a refresh or two, and given traffic.
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 1);
    let added = Instant::now();
    assert!(
        wait_set(&gw, &[a.clone(), b.clone()], Duration::from_secs(5)).await,
        "{:?}",
        backend_set(&gw).await
    );
    let took = added.elapsed();
    assert!(took < Duration::from_secs(4), "joined after {took:?}");
    let counts = tally(&gw, 20).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");

    // Slow requests on both backends, then a taken away while its request is in flight.
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = gw.url("/slow?ms=6000");
            tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(2), || async { ups[0].inflight() >= 1 }).await,
        "no slow request reached a"
    );
    dns.set("svc.test", &["127.0.0.2"], 1);
    assert!(
        wait_set(&gw, std::slice::from_ref(&b), Duration::from_secs(5)).await,
        "{:?}",
        backend_set(&gw).await
    );
    let a_hits = ups[0].hits();
    assert!(
        ups[0].inflight() >= 1,
        "the slow request on a ended too early"
    );
    let counts = tally(&gw, 10).await;
    assert_eq!(
        counts.get("b"),
        Some(&10),
        "new requests go to b only: {counts:?}"
    );
    assert_eq!(ups[0].hits(), a_hits);
    for s in slow {
        let status = s.await.unwrap().expect("slow request");
        assert_eq!(
            status, 200,
            "an in-flight request to a removed address completes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_keeps_the_last_good_set_and_is_counted() {
    let mut dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 1);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 1",
    );
    let errors = "avx_dns_lookups_total{result=\"error\",upstream=\"pool\"}";
    assert_eq!(metric(&gw, errors).await, Some(0.0));
    dns.stop();
    assert!(
        wait_until(Duration::from_secs(12), || async {
            metric(&gw, errors).await >= Some(1.0)
        })
        .await,
        "errors: {:?}\n{}",
        metric(&gw, errors).await,
        gw.log()
    );
    let status = gw.status().await;
    let name = &status["upstreams"]["pool"]["dns"]["names"][0];
    assert!(name["last_error"].is_string(), "{status}");
    assert_eq!(
        name["addresses"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    let counts = tally(&gw, 20).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
    assert!(
        gw.log().contains("looking up svc.test"),
        "the failure is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_shorter_than_the_refresh_interval_wins() {
    let dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1"], 1);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 3600",
    );
    let before = dns.queries();
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 1);
    assert!(
        wait_set(
            &gw,
            &[format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")],
            Duration::from_secs(5)
        )
        .await,
        "{:?}",
        backend_set(&gw).await
    );
    assert!(dns.queries() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_and_retries_cover_resolved_addresses() {
    let dns = DnsServer::start().await;
    // a on 127.0.0.1; nothing listens on 127.0.0.3 at this port; b joins later.
    let (port, ups) = origins(&["a", "b"]).await;
    let dead = format!("127.0.0.3:{port}");
    dns.set("svc.test", &["127.0.0.1", "127.0.0.3"], 1);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 1\n    retries: 1\n    health_check: { type: http, path: /health, interval_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }",
    );
    let healthy = |status: &serde_json::Value, addr: &str| {
        status["upstreams"]["pool"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|b| b["address"] == addr))
            .and_then(|b| b["healthy"].as_bool())
    };
    assert!(
        wait_until(Duration::from_secs(5), || async {
            healthy(&gw.status().await, &dead) == Some(false)
        })
        .await,
        "{}",
        gw.status().await
    );
    assert_eq!(tally(&gw, 10).await.get("a"), Some(&10));

    dns.set("svc.test", &["127.0.0.1", "127.0.0.2", "127.0.0.3"], 1);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            ups[1].health_checks() >= 1
        })
        .await,
        "the new address is health-checked"
    );
    let counts = tally(&gw, 20).await;
    assert!(counts.get("b") >= Some(&5), "{counts:?}");
    assert_eq!(healthy(&gw.status().await, &dead), Some(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_on_a_resolved_address_are_retried_and_eject_it() {
    let dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1", "127.0.0.3"], 1);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 1\n    retries: 1\n    passive_health: { consecutive_failures: 1, cooldown_ms: 60000 }",
    );
    assert_eq!(tally(&gw, 10).await.get("a"), Some(&10));
    let ejected = |status: serde_json::Value| {
        status["upstreams"]["pool"]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == format!("127.0.0.3:{port}"))
            .map(|b| b["ejected"].clone())
    };
    assert_eq!(ejected(gw.status().await), Some(serde_json::json!(true)));

    // A refresh that brings in another address keeps the ejection of the one that stays.
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2", "127.0.0.3"], 1);
    let all = [1, 2, 3].map(|i| format!("127.0.0.{i}:{port}"));
    assert!(wait_set(&gw, &all, Duration::from_secs(5)).await);
    assert_eq!(ejected(gw.status().await), Some(serde_json::json!(true)));
    let counts = tally(&gw, 20).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&10), Some(&10)),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_resolved_by_the_config_test_and_an_unresolvable_one_is_a_located_error() {
    let dns = DnsServer::start().await;
    dns.set("svc.test", &["127.0.0.1"], 300);
    let yaml = |name: &str, extra: &str| {
        format!(
            "listeners:\n  - address: 127.0.0.1:18080\nupstreams:\n  pool:\n    dns_servers: [\"{}\"]\n{extra}    servers:\n      - address: 127.0.0.1:3000\n      - address: \"{name}\"\n\
             routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: pool }}\n",
            dns.addr
        )
    };
    let (ok, out, _, _dir) = check_config(&yaml("svc.test:80", ""));
    assert!(ok, "{out}");
    assert_error(
        &yaml("nope.test:80", ""),
        8,
        "upstreams.pool.servers[1].address",
        "cannot resolve nope.test:80",
    );
    assert_error(
        &yaml("svc.test", ""),
        8,
        "upstreams.pool.servers[1].address",
        "the port is required",
    );
    assert_error(
        &yaml("svc.test:80", "    dns_refresh_seconds: 0\n"),
        6,
        "upstreams.pool.dns_refresh_seconds",
        "must be in 1..=86400",
    );
    assert_error(
        &yaml("svc.test:80", "").replace(&dns.addr.to_string(), "not an address"),
        5,
        "upstreams.pool.dns_servers[0]",
        "invalid socket address",
    );
    assert_error(
        "listeners:\n  - address: 127.0.0.1:18080\nupstreams:\n  pool:\n    dns_refresh_seconds: 5\n    servers: [{ address: 127.0.0.1:3000 }]\n\
         routes:\n  - { name: all, match: { path_prefix: / }, upstream: pool }\n",
        5,
        "upstreams.pool.dns_refresh_seconds",
        "only used when a server address is a DNS name",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_ttl_does_not_hold_an_answer_past_the_refresh_interval() {
    let dns = DnsServer::start().await;
    let (port, _ups) = origins(&["a", "b"]).await;
    dns.set("svc.test", &["127.0.0.1"], 3600);
    let gw = gateway(
        &dns,
        &[format!("address: \"svc.test:{port}\"")],
        "    dns_refresh_seconds: 1",
    );
    dns.set("svc.test", &["127.0.0.2"], 3600);
    assert!(
        wait_set(&gw, &[format!("127.0.0.2:{port}")], Duration::from_secs(5)).await,
        "{:?}",
        backend_set(&gw).await
    );
    assert_eq!(tally(&gw, 5).await.get("b"), Some(&5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_resolved_addresses_sends_the_configured_sni() {
    let dns = DnsServer::start().await;
    let port = 'port: loop {
        let port = free_port();
        for i in 1..=2u8 {
            if std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, i], port))).is_err() {
                continue 'port;
            }
        }
        break port;
    };
    let a = TlsUpstream::start_at("svc.test", SocketAddr::from(([127, 0, 0, 1], port))).await;
    let b = TlsUpstream::start_at("svc.test", SocketAddr::from(([127, 0, 0, 2], port))).await;
    dns.set("svc.test", &["127.0.0.1", "127.0.0.2"], 300);
    let gw = GatewayProcess::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\nupstreams:\n  pool:\n    dns_servers: [\"{}\"]\n    tls: {{ sni: svc.test, verify: false }}\n    servers: [{{ address: \"svc.test:{port}\" }}]\n\
         routes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: pool, preserve_host: false }}\n",
        dns.addr
    ));
    let c = client();
    for i in 0..10 {
        let resp = c.get(gw.url(&format!("/t/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", gw.log());
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["sni"], "svc.test", "{echo}");
        assert_eq!(echo["host"], "svc.test", "{echo}");
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}
