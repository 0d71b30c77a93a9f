//! The admin `/metrics` endpoint: request, error and latency series with config-only labels,
//! breaker and backend state read at scrape time, the admin token, and `promtool check metrics`.

use crate::harness::{client, promtool, refused_addr, GatewayProcess, TestUpstream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret";

/// A gateway with routes over a breaker-guarded pool, a rate-limited route, a dead upstream
/// and a health-checked one; the admin listener requires [`TOKEN`].
fn gateway(pool: &TestUpstream, checked: &TestUpstream) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
admin:
  address: "{{admin}}"
  token: {TOKEN}
upstreams:
  pool:
    servers: [{{ address: "{pool}" }}]
    passive_health: {{ enabled: false }}
    circuit_breaker: {{ failure_threshold: 2, failure_rate: 0, open_seconds: 30 }}
  dead:
    servers: [{{ address: "{dead}" }}]
    retries: 0
    passive_health: {{ enabled: false }}
  checked:
    servers: [{{ address: "{checked}" }}]
    health_check:
      type: http
      path: /health
      interval_ms: 100
      timeout_ms: 500
      healthy_threshold: 1
      unhealthy_threshold: 1
routes:
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: checked
    strip_prefix: true
    rate_limit: {{ requests_per_second: 1, burst: 0, key: route }}
  - name: dead
    match: {{ path_prefix: /dead }}
    upstream: dead
  - name: checked
    match: {{ path_prefix: /checked }}
    upstream: checked
    strip_prefix: true
  - name: api
    match: {{ path_prefix: /api }}
    upstream: pool
    strip_prefix: true
"#,
        pool = pool.addr,
        checked = checked.addr,
        dead = refused_addr(0),
    ))
}

/// The `/metrics` text, with the admin token.
async fn scrape(gw: &GatewayProcess) -> String {
    let resp = client()
        .get(gw.admin_url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

/// The value of the sample written exactly as `series` (name and labels), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/metrics` (bounded) until `series` has the value `want`; returns that scrape.
async fn wait_value(gw: &GatewayProcess, series: &str, want: f64) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(gw).await;
        if value(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "{series} never became {want}; last {:?} in:\n{text}",
            value(&text, series)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn get(c: &reqwest::Client, gw: &GatewayProcess, path: &str) -> u16 {
    let resp = c.get(gw.url(path)).send().await.expect("request");
    let status = resp.status().as_u16();
    resp.bytes().await.expect("body");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_errors_latency_and_state_are_exported_with_config_labels() {
    let pool = TestUpstream::start("pool").await;
    let checked = TestUpstream::start("checked").await;
    let gw = gateway(&pool, &checked);
    let c = client();

    // Traffic of every kind.
    for _ in 0..3 {
        assert_eq!(get(&c, &gw, "/api/users/1").await, 200);
    }
    let post = c.post(gw.url("/api/users")).body("x").send().await.unwrap();
    assert_eq!(post.status(), 200);
    post.bytes().await.unwrap();
    assert_eq!(get(&c, &gw, "/nothing/here").await, 404);
    assert_eq!(get(&c, &gw, "/limited/a").await, 200);
    assert_eq!(get(&c, &gw, "/limited/b").await, 429);
    assert_eq!(get(&c, &gw, "/dead/x").await, 502);

    let api = r#"route="api""#;
    // `logging` runs after the client has its response, so every expectation is awaited.
    let mut t = String::new();
    for (series, want) in [
        (
            format!(r#"avx_requests_total{{method="GET",{api},status_class="2xx"}}"#),
            3.0,
        ),
        (
            r#"avx_errors_total{kind="connect",route="dead"}"#.into(),
            1.0,
        ),
        (
            format!(r#"avx_requests_total{{method="POST",{api},status_class="2xx"}}"#),
            1.0,
        ),
        (
            r#"avx_requests_total{method="GET",route="",status_class="4xx"}"#.into(),
            1.0,
        ),
        (r#"avx_errors_total{kind="no_route",route=""}"#.into(), 1.0),
        (
            r#"avx_errors_total{kind="rate_limited",route="limited"}"#.into(),
            1.0,
        ),
        (r#"avx_rate_limited_total{route="limited"}"#.into(), 1.0),
        (
            r#"avx_requests_total{method="GET",route="limited",status_class="4xx"}"#.into(),
            1.0,
        ),
        (
            r#"avx_requests_total{method="GET",route="dead",status_class="5xx"}"#.into(),
            1.0,
        ),
        (
            format!(r#"avx_request_duration_seconds_count{{{api}}}"#),
            4.0,
        ),
        (
            r#"avx_upstream_duration_seconds_count{upstream="pool"}"#.into(),
            4.0,
        ),
        (
            r#"avx_upstream_duration_seconds_count{upstream="dead"}"#.into(),
            1.0,
        ),
        (format!(r#"avx_route_in_flight{{{api}}}"#), 0.0),
        (r#"avx_circuit_breaker_state{upstream="pool"}"#.into(), 0.0),
        (
            r#"avx_circuit_breaker_transitions_total{upstream="pool"}"#.into(),
            0.0,
        ),
        (
            format!(
                r#"avx_backend_healthy{{backend="{}",upstream="pool"}}"#,
                pool.addr
            ),
            1.0,
        ),
        ("avx_access_log_dropped_total".into(), 0.0),
        ("avx_cache_hits_total".into(), 0.0),
        (
            r#"avx_compression_bytes_in_total{algorithm="gzip"}"#.into(),
            0.0,
        ),
    ] {
        t = wait_value(&gw, &series, want).await;
    }
    // Latency buckets are fine below a millisecond, and the histogram is cumulative.
    assert!(t.contains(&format!(
        r#"avx_request_duration_seconds_bucket{{{api},le="0.0001"}}"#
    )));
    assert_eq!(
        value(
            &t,
            &format!(r#"avx_request_duration_seconds_bucket{{{api},le="+Inf"}}"#)
        ),
        Some(4.0)
    );
    // Labels come from the config only: no raw path, no client address.
    for raw in ["/api/users", "/nothing", "/limited/a", "127.0.0.1\""] {
        assert!(!t.contains(raw), "{raw} leaked into the metrics:\n{t}");
    }
    // Process metrics and the build info are there too.
    assert!(value(&t, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    assert!(value(&t, "process_open_fds").is_some_and(|v| v > 0.0));
    assert!(t.contains("avx_build_info{git_hash=\""), "{t}");

    // In flight: a slow request shows on its route and its backend while it runs.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = gw.url("/api/slow?ms=1500");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    wait_value(&gw, &format!(r#"avx_route_in_flight{{{api}}}"#), 1.0).await;
    wait_value(
        &gw,
        &format!(
            r#"avx_backend_in_flight{{backend="{}",upstream="pool"}}"#,
            pool.addr
        ),
        1.0,
    )
    .await;
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    wait_value(&gw, &format!(r#"avx_route_in_flight{{{api}}}"#), 0.0).await;

    // Two upstream 503s open the breaker; the next request fails fast.
    assert_eq!(get(&c, &gw, "/api/status/503").await, 503);
    assert_eq!(get(&c, &gw, "/api/status/503").await, 503);
    wait_value(&gw, r#"avx_circuit_breaker_state{upstream="pool"}"#, 2.0).await;
    assert_eq!(get(&c, &gw, "/api/users/1").await, 503);
    let t = wait_value(
        &gw,
        r#"avx_errors_total{kind="circuit_open",route="api"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        value(&t, r#"avx_errors_total{kind="upstream_5xx",route="api"}"#),
        Some(2.0)
    );
    assert_eq!(
        value(
            &t,
            r#"avx_circuit_breaker_transitions_total{upstream="pool"}"#
        ),
        Some(1.0)
    );

    // The health gauge follows the active health check both ways.
    let health = format!(
        r#"avx_backend_healthy{{backend="{}",upstream="checked"}}"#,
        checked.addr
    );
    wait_value(&gw, &health, 1.0).await;
    checked.set_healthy(false);
    wait_value(&gw, &health, 0.0).await;
    checked.set_healthy(true);
    wait_value(&gw, &health, 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_require_the_admin_token_and_use_the_text_format() {
    let pool = TestUpstream::start("pool").await;
    let checked = TestUpstream::start("checked").await;
    let gw = gateway(&pool, &checked);
    let c = client();
    let anonymous = c.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = c
        .get(gw.admin_url("/metrics"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = c
        .get(gw.admin_url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["content-type"].to_str().unwrap(),
        "text/plain; version=0.0.4"
    );
    // Families without a labelled child yet (no traffic) are left out; fixed ones are there.
    let text = ok.text().await.unwrap();
    assert!(
        text.contains("# TYPE avx_cache_hits_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE avx_build_info gauge"), "{text}");
    // /health stays open for probes.
    let health = c.get(gw.admin_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_check_metrics() {
    let Some(promtool) = promtool() else {
        // CI runs scripts/setup.sh, which provides promtool: there its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing on CI: scripts/setup.sh should have unpacked it"
        );
        eprintln!(
            "\n!!! SKIPPED the_exposition_passes_promtool_check_metrics: promtool not found \
             (run scripts/setup.sh, or set PROMTOOL) !!!\n"
        );
        return;
    };
    let pool = TestUpstream::start("pool").await;
    let checked = TestUpstream::start("checked").await;
    let gw = gateway(&pool, &checked);
    let c = client();
    // Populate every kind of family: counters with labels, histograms, errors.
    for path in [
        "/api/a",
        "/nothing",
        "/limited/a",
        "/limited/b",
        "/dead/x",
        "/api/status/500",
    ] {
        get(&c, &gw, path).await;
    }
    let text = wait_value(&gw, r#"avx_errors_total{kind="connect",route="dead"}"#, 1.0).await;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("promtool stdin");
        stdin.write_all(text.as_bytes()).expect("feed promtool");
    }
    let out = child.wait_with_output().expect("promtool finishes");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics failed ({}):\n{report}\n--- exposition ---\n{text}",
        out.status
    );
}
