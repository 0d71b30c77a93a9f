//! Cluster-wide rate limits (`scope: cluster`) against a real `redis-server`: accuracy across
//! two gateways, Redis faults and recovery, the local shortcut, headers, config errors.

use crate::config_errors::assert_error;
use crate::harness::{
    check_config, client, metric, refused_addr, wait_until, GatewayProcess, RedisCluster,
    RedisServer, TestUpstream,
};
use std::time::{Duration, Instant};

/// A gateway over `up` with `redis:` at `redis_url` (`timeout_ms` per command) and `routes`
/// (the YAML list under `routes:`).
fn gateway(up: &TestUpstream, redis_url: &str, timeout_ms: u64, routes: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  backend:
    servers: [{{ address: "{}" }}]
redis:
  url: {redis_url}
  pool_size: 2
  timeout_ms: {timeout_ms}
routes:
{routes}
"#,
        up.addr
    ))
}

/// One route `name` on `prefix` with a cluster limit of `limit` (the flow mapping's body).
fn route(name: &str, prefix: &str, limit: &str) -> String {
    format!(
        "  - name: {name}
    match: {{ path_prefix: {prefix} }}
    upstream: backend
    rate_limit: {{ scope: cluster, {limit} }}
"
    )
}

/// GET `url` with `X-Key: key`; the status and headers.
async fn get(c: &reqwest::Client, url: &str, key: &str) -> (u16, reqwest::header::HeaderMap) {
    let resp = c
        .get(url)
        .header("x-key", key)
        .send()
        .await
        .expect("request through the gateway");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    resp.bytes().await.expect("response body");
    (status, headers)
}

fn num(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn backend_errors(gw: &GatewayProcess) -> f64 {
    let e = metric(gw, "avx_ratelimit_backend_errors_total{kind=\"error\"}").await;
    let t = metric(gw, "avx_ratelimit_backend_errors_total{kind=\"timeout\"}").await;
    e.unwrap_or(0.0) + t.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_rate_times_t_plus_burst_in_total() {
    const RPS: u64 = 20;
    const BURST: u64 = 10;
    const SECS: u64 = 10;
    // 4 senders at 50 req/s, two per gateway: 200 req/s in all, 10x the limit.
    const SENDERS: u64 = 4;
    const SENDER_GAP: Duration = Duration::from_millis(20);
    let redis = RedisServer::start();
    let up = TestUpstream::start("a").await;
    let limit = format!("requests_per_second: {RPS}, burst: {BURST}, key: \"header:x-key\"");
    // A generous deadline: a debug build on a busy CI box must not fail open and over-admit.
    let gws = [
        gateway(&up, &redis.url(), 500, &route("api", "/", &limit)),
        gateway(&up, &redis.url(), 500, &route("api", "/", &limit)),
    ];
    let c = client();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let per_sender = SECS * 1000 / SENDER_GAP.as_millis() as u64;
    let mut flood = Vec::new();
    for s in 0..SENDERS {
        let (c, url) = (c.clone(), gws[s as usize % 2].url("/api/x"));
        flood.push(tokio::spawn(async move {
            let offset = SENDER_GAP / SENDERS as u32 * s as u32;
            let (mut admitted, mut rejected) = (0u64, 0u64);
            for i in 0..per_sender {
                tokio::time::sleep_until(start + offset + SENDER_GAP * i as u32).await;
                match get(&c, &url, "flood").await.0 {
                    200 => admitted += 1,
                    429 => rejected += 1,
                    other => panic!("flood request answered {other}"),
                }
            }
            (admitted, rejected)
        }));
    }
    let (mut admitted, mut sent) = (0, 0);
    let mut per_gateway = [0u64; 2];
    for (s, f) in flood.into_iter().enumerate() {
        let (a, r) = f.await.expect("flood sender");
        admitted += a;
        sent += a + r;
        per_gateway[s % 2] += a;
    }
    let elapsed = start.elapsed();
    assert_eq!(sent, SENDERS * per_sender);
    let expected = (RPS * SECS + BURST) as f64;
    assert!(
        (admitted as f64 - expected).abs() <= expected * 0.10,
        "admitted {admitted} of {sent} in {elapsed:?} (per gateway {per_gateway:?}); \
         expected {expected} ± 10% in total"
    );
    assert!(
        per_gateway.iter().all(|&a| a > 0),
        "both gateways admitted some: {per_gateway:?}"
    );
    for gw in &gws {
        assert_eq!(backend_errors(gw).await, 0.0, "no Redis error or timeout");
        assert_eq!(
            metric(gw, "avx_ratelimit_backend_up").await,
            Some(1.0),
            "backend up"
        );
    }
    assert_eq!(
        up.hits() as u64,
        admitted,
        "refused requests never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_applies_failure_mode_within_the_deadline_and_limiting_resumes_when_back() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::start("a").await;
    let limit = "requests_per_second: 1, burst: 0, key: \"header:x-key\"";
    let routes = format!(
        "{}{}",
        route("open", "/open", &format!("{limit}, failure_mode: open")),
        route(
            "closed",
            "/closed",
            &format!("{limit}, failure_mode: closed")
        ),
    );
    let gw = gateway(&up, &redis.url(), 50, &routes);
    let c = client();
    // Before /status or /metrics can say anything, both series exist (pre-created labels).
    assert_eq!(
        metric(&gw, "avx_ratelimit_backend_errors_total{kind=\"timeout\"}").await,
        Some(0.0)
    );
    assert_eq!(
        metric(&gw, "avx_ratelimit_backend_errors_total{kind=\"error\"}").await,
        Some(0.0)
    );
    // Limited through Redis: one admission per second per key.
    assert_eq!(get(&c, &gw.url("/closed"), "a").await.0, 200);
    assert_eq!(get(&c, &gw.url("/closed"), "a").await.0, 429);
    assert_eq!(gw.status().await["redis"]["connected"], true);

    redis.stop();
    // Fresh keys each time, so the local shortcut cannot answer for Redis.
    let mut n = 0;
    let mut next_key = || {
        n += 1;
        format!("k{n}")
    };
    let failing = wait_until(Duration::from_secs(10), || {
        let (c, url, key) = (c.clone(), gw.url("/closed"), next_key());
        async move { get(&c, &url, &key).await.0 == 503 }
    })
    .await;
    assert!(failing, "failure_mode: closed answers 503 with Redis down");
    for i in 0..5 {
        let t = Instant::now();
        let (status, h) = get(&c, &gw.url("/closed"), &next_key()).await;
        let took = t.elapsed();
        assert_eq!(status, 503, "closed request {i}");
        assert_eq!(num(&h, "retry-after"), Some(1), "{h:?}");
        let t = Instant::now();
        let (status, h) = get(&c, &gw.url("/open"), &next_key()).await;
        let took_open = t.elapsed();
        assert_eq!(status, 200, "failure_mode: open admits with Redis down");
        assert!(
            h.get("ratelimit-remaining").is_none(),
            "no figures when Redis could not say: {h:?}"
        );
        // timeout_ms is 50; the rest is a debug build's request on a shared box.
        assert!(
            took < Duration::from_millis(600) && took_open < Duration::from_millis(600),
            "answers within the deadline: closed {took:?}, open {took_open:?}"
        );
    }
    assert!(backend_errors(&gw).await >= 10.0, "every failure counted");
    assert_eq!(metric(&gw, "avx_ratelimit_backend_up").await, Some(0.0));
    let status = gw.status().await;
    assert_eq!(status["redis"]["connected"], false, "{status}");
    assert!(
        status["redis"]["errors"].as_u64().unwrap_or(0) >= 10,
        "{status}"
    );

    redis.start_again();
    // Back without a restart: a fresh key is admitted once, then refused by the shared bucket.
    let resumed = wait_until(Duration::from_secs(15), || {
        let (c, url, key) = (c.clone(), gw.url("/closed"), next_key());
        async move { get(&c, &url, &key).await.0 == 200 && get(&c, &url, &key).await.0 == 429 }
    })
    .await;
    assert!(
        resumed,
        "cluster limiting resumes once Redis is back:\n{}",
        gw.log()
    );
    assert_eq!(metric(&gw, "avx_ratelimit_backend_up").await, Some(1.0));
    assert_eq!(gw.status().await["redis"]["connected"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_known_over_its_limit_is_refused_locally_without_a_round_trip() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("a").await;
    // One admission per 5 s: the refused-until instant lies well after the requests below.
    let gw = gateway(
        &up,
        &redis.url(),
        500,
        &route(
            "api",
            "/",
            "requests_per_second: 0.2, burst: 0, key: \"header:x-key\"",
        ),
    );
    let c = client();
    assert_eq!(get(&c, &gw.url("/x"), "hot").await.0, 200);
    let (status, first) = get(&c, &gw.url("/x"), "hot").await;
    assert_eq!(status, 429, "Redis refuses the second request");
    assert!(redis.calls("evalsha") + redis.calls("eval") >= 2);
    assert_eq!(redis.cmd(&["CONFIG", "RESETSTAT"]).as_deref(), Some("+OK"));
    for i in 0..50 {
        let (status, h) = get(&c, &gw.url("/x"), "hot").await;
        assert_eq!(status, 429, "request {i} while over the limit");
        assert_eq!(num(&h, "ratelimit-remaining"), Some(0), "{h:?}");
        assert!(
            num(&h, "retry-after").is_some_and(|r| (1..=5).contains(&r)),
            "{h:?}"
        );
        assert_eq!(
            h.get("ratelimit-policy"),
            first.get("ratelimit-policy"),
            "a local refusal reads like Redis's"
        );
    }
    assert_eq!(
        redis.calls("evalsha") + redis.calls("eval"),
        0,
        "no command reached Redis for the key while it was known to be over its limit"
    );
    // Another key still goes to Redis.
    assert_eq!(get(&c, &gw.url("/x"), "cold").await.0, 200);
    assert_eq!(redis.calls("evalsha") + redis.calls("eval"), 1);
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scope_sends_the_same_headers_as_local_scope() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("a").await;
    let limit = "requests_per_second: 1, burst: 3, key: \"header:x-key\"";
    let routes = format!(
        "{}  - name: local
    match: {{ path_prefix: /local }}
    upstream: backend
    rate_limit: {{ {limit} }}
",
        route("cluster", "/cluster", limit)
    );
    let gw = gateway(&up, &redis.url(), 500, &routes);
    let c = client();
    let names = [
        "ratelimit-limit",
        "ratelimit-policy",
        "ratelimit-remaining",
        "ratelimit-reset",
        "retry-after",
    ];
    for i in 0..6 {
        let (ls, lh) = get(&c, &gw.url("/local"), "k").await;
        let (cs, ch) = get(&c, &gw.url("/cluster"), "k").await;
        assert_eq!(ls, cs, "request {i}: status");
        assert_eq!(ls, if i < 4 { 200 } else { 429 }, "request {i}");
        for name in names {
            assert_eq!(lh.get(name), ch.get(name), "request {i}: {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_at_start_neither_blocks_start_up_nor_the_config_test() {
    let up = TestUpstream::start("a").await;
    let url = format!("redis://{}/0", refused_addr(0));
    let routes = route("api", "/", "requests_per_second: 1, burst: 0");
    let yaml = format!(
        "listeners:\n  - address: \"127.0.0.1:8080\"\n\
         upstreams:\n  backend:\n    servers: [{{ address: \"{}\" }}]\n\
         redis:\n  url: {url}\nroutes:\n{routes}",
        up.addr
    );
    let t = Instant::now();
    let (ok, out, _, _dir) = check_config(&yaml);
    assert!(ok, "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "-t does not wait for Redis"
    );
    let gw = gateway(&up, &url, 20, &routes);
    let c = client();
    for _ in 0..3 {
        assert_eq!(get(&c, &gw.url("/x"), "a").await.0, 200, "open by default");
    }
    assert!(backend_errors(&gw).await >= 3.0);
    assert_eq!(gw.status().await["redis"]["connected"], false);
}

#[test]
fn cluster_config_errors_are_located() {
    let base = "listeners:\n  - address: \"127.0.0.1:8080\"\n\
                upstreams:\n  u:\n    servers: [{ address: \"127.0.0.1:1\" }]\n";
    // scope: cluster needs redis:.
    assert_error(
        &format!(
            "{base}routes:\n  - name: a\n    upstream: u\n    rate_limit:\n      \
             requests_per_second: 5\n      scope: cluster\n"
        ),
        11,
        "routes[0].rate_limit.scope",
        "needs a top-level `redis:` section",
    );
    assert_error(
        &format!("{base}rate_limit:\n  requests_per_second: 5\n  scope: cluster\n"),
        8,
        "rate_limit.scope",
        "redis:",
    );
    // Unknown keys, bad values.
    assert_error(
        &format!("{base}redis:\n  url: redis://127.0.0.1:6379\n  pool: 3\n"),
        8,
        "redis",
        "unknown field `pool`",
    );
    assert_error(
        &format!("{base}redis:\n  url: http://127.0.0.1:6379\n"),
        7,
        "redis.url",
        "invalid Redis URL",
    );
    assert_error(
        &format!("{base}redis:\n  pool_size: 2\n"),
        6,
        "redis",
        "needs `url`",
    );
    assert_error(
        &format!("{base}redis:\n  url: redis://127.0.0.1:6379\n  timeout_ms: 0\n"),
        8,
        "redis.timeout_ms",
        "must be in 1..=60000",
    );
    assert_error(
        &format!(
            "{base}routes:\n  - name: a\n    upstream: u\n    rate_limit:\n      \
             requests_per_second: 5\n      scope: global\n"
        ),
        11,
        "routes[0].rate_limit.scope",
        "unknown variant `global`",
    );
    assert_error(
        &format!(
            "{base}redis:\n  url: redis://127.0.0.1:6379\nroutes:\n  - name: a\n    upstream: u\n    \
             rate_limit:\n      requests_per_second: 5\n      failure_mode: maybe\n"
        ),
        13,
        "routes[0].rate_limit.failure_mode",
        "unknown variant `maybe`",
    );
    // A cluster list is accepted, and TLS.
    let (ok, out, _, _dir) = check_config(&format!(
        "{base}redis:\n  urls: [\"redis://127.0.0.1:7000\", \"rediss://127.0.0.1:7001\"]\n"
    ));
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_given_by_urls_holds_the_buckets_across_its_nodes() {
    let cluster = RedisCluster::start(3);
    let up = TestUpstream::start("a").await;
    // Two seeds of three: the gateway learns the third from the cluster's topology.
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  backend:
    servers: [{{ address: "{}" }}]
redis:
  urls: ["redis://127.0.0.1:{}", "redis://127.0.0.1:{}"]
  timeout_ms: 500
routes:
{}"#,
        up.addr,
        cluster.nodes[0].port,
        cluster.nodes[1].port,
        route(
            "api",
            "/",
            "requests_per_second: 1, burst: 2, key: \"header:x-key\", failure_mode: closed"
        )
    ));
    let c = client();
    for k in 0..12 {
        let key = format!("key-{k}");
        for i in 0..3 {
            assert_eq!(get(&c, &gw.url("/x"), &key).await.0, 200, "{key} #{i}");
        }
        assert_eq!(get(&c, &gw.url("/x"), &key).await.0, 429, "{key} over");
    }
    let per_node: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|n| {
            n.cmd(&["DBSIZE"])
                .and_then(|r| r.trim_start_matches(':').parse().ok())
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(
        per_node.iter().sum::<u64>(),
        12,
        "one key per bucket: {per_node:?}"
    );
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "keys spread over the cluster's nodes: {per_node:?}"
    );
    assert_eq!(backend_errors(&gw).await, 0.0);
}

/// The reply of `PTTL key` as a number (`-2`: no such key, `-1`: no expiry).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis
        .cmd(&["PTTL", key])
        .and_then(|r| r.strip_prefix(':')?.parse().ok())
        .unwrap_or_else(|| panic!("PTTL {key} unanswered"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_key_expires_on_its_own_once_its_bucket_is_full_again() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("a").await;
    // 1 req/s and a burst of 2: a full spend reaches 3 s ahead.
    const INTERVAL_MS: i64 = 1000;
    const BURST: i64 = 2;
    let gw = gateway(
        &up,
        &redis.url(),
        500,
        &route(
            "api",
            "/",
            "requests_per_second: 1, burst: 2, key: \"header:x-key\"",
        ),
    );
    let c = client();
    let started = Instant::now();
    assert_eq!(get(&c, &gw.url("/x"), "ttl").await.0, 200);
    assert_eq!(
        redis.cmd(&["DBSIZE"]).as_deref(),
        Some(":1"),
        "one bucket key"
    );
    let key = redis.cmd(&["RANDOMKEY"]).expect("RANDOMKEY");
    assert!(
        key.starts_with("avx:rl:api:") && key.ends_with("ttl"),
        "the route's key: {key:?}"
    );
    // One admission puts the bucket one interval ahead: the key expires within it.
    let ttl = pttl(&redis, &key);
    let elapsed = started.elapsed().as_millis() as i64;
    assert!(
        ttl > 0 && ttl <= INTERVAL_MS && ttl >= INTERVAL_MS - elapsed - 1,
        "PTTL {ttl} ms after one admission ({elapsed} ms since it was sent)"
    );

    // The whole burst: at most (burst + 1) intervals ahead.
    for i in 0..BURST {
        assert_eq!(get(&c, &gw.url("/x"), "ttl").await.0, 200, "burst {i}");
    }
    let spent_ttl = pttl(&redis, &key);
    let elapsed = started.elapsed().as_millis() as i64;
    let window = (BURST + 1) * INTERVAL_MS;
    assert!(
        spent_ttl > 0 && spent_ttl <= window && spent_ttl >= window - elapsed - 1,
        "PTTL {spent_ttl} ms after the burst ({elapsed} ms since the first request)"
    );
    // A refusal does not move the bucket, so it does not push the expiry back.
    assert_eq!(get(&c, &gw.url("/x"), "ttl").await.0, 429);
    let refused_ttl = pttl(&redis, &key);
    assert!(
        refused_ttl > 0 && refused_ttl <= spent_ttl,
        "PTTL {spent_ttl} -> {refused_ttl} ms after a refusal"
    );

    // Nobody deletes it: Redis lets it expire, and then the bucket is full again.
    let gone = wait_until(Duration::from_secs(10), || async {
        redis.cmd(&["EXISTS", &key]).as_deref() == Some(":0")
    })
    .await;
    assert!(gone, "the key is still there: PTTL {}", pttl(&redis, &key));
    assert!(
        // 100 ms for Redis's wall clock against this monotonic one.
        started.elapsed() >= Duration::from_millis((window - 100) as u64),
        "expired after {:?}, before its bucket was full again",
        started.elapsed()
    );
    assert_eq!(redis.cmd(&["DBSIZE"]).as_deref(), Some(":0"));
    for i in 0..=BURST {
        assert_eq!(
            get(&c, &gw.url("/x"), "ttl").await.0,
            200,
            "request {i} on the refilled bucket"
        );
    }
    assert_eq!(get(&c, &gw.url("/x"), "ttl").await.0, 429);
}
