//! Tracing: W3C Trace Context in and out, the spans a real OTLP/HTTP receiver decodes,
//! sampling, retries as separate attempt spans, the trace id in the access log, and a
//! stalled collector that costs spans (counted) but never request time.

use crate::harness::{
    check_config, client, metric, refused_addr, wait_until, GatewayProcess, OtlpReceiver,
    ReceivedSpan, Reply, ScriptedOrigin, TestUpstream,
};
use std::time::{Duration, Instant};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// A gateway proxying everything to `servers` (with one retry), tracing into `otlp` with
/// `extra` keys under `tracing:`, logging JSON to `{dir}/access.log`.
fn gateway(servers: &[String], otlp: &OtlpReceiver, extra: &str) -> GatewayProcess {
    gateway_at(servers, &otlp.endpoint(), extra)
}

/// [`gateway`] exporting to `endpoint`.
fn gateway_at(servers: &[String], endpoint: &str, extra: &str) -> GatewayProcess {
    let servers: Vec<String> = servers
        .iter()
        .map(|s| format!("{{ address: \"{s}\" }}"))
        .collect();
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
access_log:
  enabled: true
  path: "{{dir}}/access.log"
  format: json
upstreams:
  pool:
    servers: [{}]
    retries: 1
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: pool
tracing:
  enabled: true
  otlp_endpoint: "{}"
  service_name: gw-under-test
  scheduled_delay_ms: 20
{extra}
"#,
        servers.join(", "),
        endpoint
    ))
}

/// GET `path` with these extra headers; returns the status and the origin's echo.
async fn get(
    gw: &GatewayProcess,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request through the gateway");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The header the origin saw, from its JSON echo.
fn seen<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

fn servers_of(spans: &[ReceivedSpan], trace: &str) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == 2 && s.trace_id == trace)
        .cloned()
        .collect()
}

fn attempts_of(spans: &[ReceivedSpan], server: &ReceivedSpan) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == 3 && s.parent_span_id == server.span_id)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_sampled_parent_is_continued_and_propagated_to_the_origin() {
    let otlp = OtlpReceiver::start().await;
    let up = TestUpstream::start("origin").await;
    let gw = gateway(&[up.addr.to_string()], &otlp, "  sample_ratio: 0");

    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let (status, echo) = get(
        &gw,
        "/items/7?x=1",
        &[
            ("traceparent", &parent),
            ("tracestate", "vendor=abc,other=1"),
        ],
    )
    .await;
    assert_eq!(status, 200);

    let spans = otlp.wait_spans(2, Duration::from_secs(10)).await;
    let servers = servers_of(&spans, PARENT_TRACE);
    assert_eq!(servers.len(), 1, "one server span in {spans:#?}");
    let server = &servers[0];
    assert_eq!(server.name, "GET api");
    assert_eq!(
        server.parent_span_id, PARENT_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(server.service, "gw-under-test");
    for (k, v) in [
        ("http.request.method", "GET"),
        ("url.path", "/items/7"),
        ("url.scheme", "http"),
        ("http.response.status_code", "200"),
        ("server.address", "127.0.0.1"),
        ("avx.route", "api"),
        ("avx.upstream", "pool"),
        ("network.peer.address", "127.0.0.1"),
    ] {
        assert_eq!(server.attr(k), Some(v), "{k} on {server:#?}");
    }
    assert_eq!(server.status, 0, "a 200 is not an error");

    let attempts = attempts_of(&spans, server);
    assert_eq!(attempts.len(), 1, "one attempt in {spans:#?}");
    let attempt = &attempts[0];
    assert_eq!(attempt.trace_id, PARENT_TRACE);
    assert_eq!(attempt.name, "GET");
    assert_eq!(attempt.attr("avx.upstream"), Some("pool"));
    assert_eq!(attempt.attr("network.peer.address"), Some("127.0.0.1"));
    let port = up.addr.port().to_string();
    assert_eq!(attempt.attr("network.peer.port"), Some(port.as_str()));
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
    assert_eq!(attempt.trace_state, "vendor=abc,other=1");

    // The origin's parent is the attempt span, in the same trace, sampled.
    assert_eq!(
        seen(&echo, "traceparent"),
        Some(format!("00-{PARENT_TRACE}-{}-01", attempt.span_id).as_str()),
        "{echo}"
    );
    assert_eq!(seen(&echo, "tracestate"), Some("vendor=abc,other=1"));

    // The access log line carries the trace id.
    let log = gw.dir().join("access.log");
    let logged = wait_until(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("\"trace_id\":\"{PARENT_TRACE}\""))
    })
    .await;
    assert!(
        logged,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Counted in /metrics and /status.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            metric(&gw, "avx_tracing_spans_exported_total").await >= Some(2.0)
        })
        .await
    );
    assert_eq!(
        metric(&gw, "avx_tracing_spans_dropped_total").await,
        Some(0.0)
    );
    let st = gw.status().await;
    assert_eq!(st["tracing"]["enabled"], true);
    assert!(st["tracing"]["exported"].as_u64() >= Some(2), "{st}");
    assert_eq!(st["tracing"]["dropped"], 0);
}

#[tokio::test]
async fn sampling_is_parent_based() {
    let otlp = OtlpReceiver::start().await;
    let up = TestUpstream::start("origin").await;
    let gw = gateway(&[up.addr.to_string()], &otlp, "  sample_ratio: 0");

    // Ratio 0, no parent: not sampled, yet a traceparent (sampled flag off) still goes on.
    let (_, echo) = get(&gw, "/a", &[]).await;
    let tp = seen(&echo, "traceparent")
        .expect("traceparent sent upstream")
        .to_string();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");
    // An unsampled parent stays unsampled, and keeps its trace id.
    let unsampled = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    let (_, echo) = get(&gw, "/b", &[("traceparent", &unsampled)]).await;
    let tp = seen(&echo, "traceparent").unwrap_or_default();
    assert!(
        tp.starts_with(&format!("00-{PARENT_TRACE}-")) && tp.ends_with("-00"),
        "{tp}"
    );
    // A sampled parent is always kept, even at ratio 0.
    let sampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    get(&gw, "/c", &[("traceparent", sampled)]).await;

    otlp.wait_spans(2, Duration::from_secs(10)).await;
    // Spans of the unsampled requests, had there been any, would have come in the same batch
    // or before; a few more export intervals make sure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = otlp.spans();
    assert_eq!(
        spans.len(),
        2,
        "only the sampled request's two spans: {spans:#?}"
    );
    assert!(spans
        .iter()
        .all(|s| s.trace_id == "0af7651916cd43dd8448eb211c80319c"));
    assert!(spans
        .iter()
        .any(|s| s.kind == 2 && s.parent_span_id == "b7ad6b7169203331"));
}

#[tokio::test]
async fn ratio_one_samples_every_new_trace() {
    let otlp = OtlpReceiver::start().await;
    let up = TestUpstream::start("origin").await;
    // The endpoint by name: resolved by the exporter, at export time.
    let by_name = format!("http://localhost:{}/v1/traces", otlp.addr.port());
    let gw = gateway_at(&[up.addr.to_string()], &by_name, "  sample_ratio: 1");
    let mut traces = Vec::new();
    for _ in 0..3 {
        let (_, echo) = get(&gw, "/x", &[]).await;
        let tp = seen(&echo, "traceparent").unwrap_or_default().to_string();
        assert!(tp.ends_with("-01"), "{tp}");
        traces.push(tp[3..35].to_string());
    }
    let spans = otlp.wait_spans(6, Duration::from_secs(10)).await;
    for t in &traces {
        let servers = servers_of(&spans, t);
        assert_eq!(servers.len(), 1, "{t} in {spans:#?}");
        assert_eq!(
            servers[0].parent_span_id, "",
            "a new trace has a root server span"
        );
        assert_eq!(attempts_of(&spans, &servers[0]).len(), 1);
    }
}

#[tokio::test]
async fn an_invalid_traceparent_starts_a_new_trace() {
    let otlp = OtlpReceiver::start().await;
    let up = TestUpstream::start("origin").await;
    let gw = gateway(&[up.addr.to_string()], &otlp, "  sample_ratio: 1");
    // Uppercase hex is invalid: a new trace, and the orphaned tracestate is not forwarded.
    let bad = format!("00-{}-{PARENT_SPAN}-01", PARENT_TRACE.to_uppercase());
    let (status, echo) = get(&gw, "/x", &[("traceparent", &bad), ("tracestate", "a=1")]).await;
    assert_eq!(status, 200);
    let tp = seen(&echo, "traceparent").unwrap_or_default();
    assert!(!tp.to_lowercase().contains(PARENT_TRACE), "{tp}");
    assert_eq!(tp.len(), 55, "{tp}");
    assert_eq!(seen(&echo, "tracestate"), None, "{echo}");
    let spans = otlp.wait_spans(2, Duration::from_secs(10)).await;
    let server = spans.iter().find(|s| s.kind == 2).expect("server span");
    assert_eq!(server.parent_span_id, "");
    assert_eq!(&tp[3..35], server.trace_id);
}

#[tokio::test]
async fn a_retry_is_a_second_attempt_span_and_5xx_is_an_error() {
    let otlp = OtlpReceiver::start().await;
    let up = TestUpstream::start("origin").await;
    let dead = refused_addr(0).to_string();
    let gw = gateway(
        &[dead.clone(), up.addr.to_string()],
        &otlp,
        "  sample_ratio: 1",
    );
    // Round robin: of two requests, one meets the dead server first and is retried.
    for _ in 0..2 {
        let (status, _) = get(&gw, "/r", &[]).await;
        assert_eq!(status, 200);
    }
    let spans = otlp.wait_spans(5, Duration::from_secs(10)).await;
    let retried = spans
        .iter()
        .filter(|s| s.kind == 2)
        .find(|s| attempts_of(&spans, s).len() == 2)
        .unwrap_or_else(|| panic!("no server span with two attempts: {spans:#?}"));
    assert_eq!(retried.attr("avx.upstream_attempts"), Some("2"));
    let attempts = attempts_of(&spans, retried);
    let failed = attempts
        .iter()
        .find(|a| a.attr("network.peer.address") == Some("127.0.0.2"))
        .expect("the dead server's attempt");
    assert_eq!(
        failed.status, 2,
        "a refused connect is an error: {failed:#?}"
    );
    assert!(failed.attr("error.type").is_some());
    let ok = attempts
        .iter()
        .find(|a| a.attr("network.peer.address") == Some("127.0.0.1"))
        .expect("the live server's attempt");
    assert_eq!(ok.attr("http.request.resend_count"), Some("1"));
    assert_eq!(ok.attr("http.response.status_code"), Some("200"));

    // A 5xx from the origin marks both spans as errors.
    up.set_fail_status(Some(503));
    let before = otlp.spans().len();
    let (status, _) = get(&gw, "/boom", &[]).await;
    assert_eq!(status, 503);
    let spans = otlp.wait_spans(before + 2, Duration::from_secs(10)).await;
    let server = spans[before..]
        .iter()
        .find(|s| s.kind == 2)
        .expect("server span of the 503");
    assert_eq!(server.status, 2, "{server:#?}");
    assert_eq!(server.attr("http.response.status_code"), Some("503"));
}

#[tokio::test]
async fn a_stalled_collector_drops_and_counts_without_slowing_requests() {
    let otlp = OtlpReceiver::start().await;
    otlp.set_hang(true);
    let up = TestUpstream::start("origin").await;
    let gw = gateway(
        &[up.addr.to_string()],
        &otlp,
        "  sample_ratio: 1\n  max_queue_size: 4\n  max_export_batch_size: 2\n  export_timeout_ms: 30000",
    );
    let started = Instant::now();
    for _ in 0..40 {
        let (status, _) = get(&gw, "/q", &[]).await;
        assert_eq!(status, 200);
    }
    let took = started.elapsed();
    // 40 requests, 80 spans: one batch hangs in export, the queue holds 4, the rest drop.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            metric(&gw, "avx_tracing_spans_dropped_total").await >= Some(60.0)
        })
        .await,
        "dropped: {:?}",
        metric(&gw, "avx_tracing_spans_dropped_total").await
    );
    assert_eq!(
        metric(&gw, "avx_tracing_spans_exported_total").await,
        Some(0.0)
    );
    assert!(otlp.requests() >= 1, "the exporter did try");
    assert!(gw.status().await["tracing"]["dropped"].as_u64() >= Some(60));
    assert!(took < Duration::from_secs(5), "40 requests took {took:?}");
}

#[tokio::test]
async fn tracing_off_adds_no_traceparent() {
    let up = TestUpstream::start("origin").await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  pool:
    servers: [{{ address: "{}" }}]
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: pool
"#,
        up.addr
    ));
    let (_, echo) = get(&gw, "/x", &[]).await;
    assert_eq!(seen(&echo, "traceparent"), None, "{echo}");
    // A client's own traceparent passes through untouched.
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let (_, echo) = get(&gw, "/x", &[("traceparent", &parent)]).await;
    assert_eq!(seen(&echo, "traceparent"), Some(parent.as_str()));
    let st = gw.status().await;
    assert_eq!(st["tracing"]["enabled"], false);
    assert_eq!(metric(&gw, "avx_tracing_spans_exported_total").await, None);
}

#[test]
fn tracing_keys_are_validated_where_they_are() {
    const LISTENER: &str = "listeners:\n  - address: 127.0.0.1:1\n";
    for (yaml, line, key) in [
        (
            "tracing:\n  enabled: true\n  sample_ratio: 1.5\n",
            5,
            "tracing.sample_ratio",
        ),
        (
            "tracing:\n  otlp_endpoint: ftp://collector/v1/traces\n",
            4,
            "tracing.otlp_endpoint",
        ),
        (
            "tracing:\n  enabled: true\n  max_queue_size: 0\n",
            5,
            "tracing.max_queue_size",
        ),
        ("tracing:\n  enabled: true\n  samplr: 1\n", 5, "tracing"),
        (
            "tracing:\n  enabled: true\n  service_name: \" \"\n",
            5,
            "tracing.service_name",
        ),
    ] {
        let (ok, out, path, _dir) = check_config(&format!("{LISTENER}{yaml}"));
        assert!(!ok, "accepted:\n{yaml}");
        let want = format!("{}:{line}:", path.display());
        assert!(out.contains(&want), "{want} not in {out}");
        assert!(out.contains(key), "{key} not in {out}");
    }
    let (ok, out, _, _dir) = check_config(&format!(
        "{LISTENER}tracing:\n  enabled: true\n  otlp_endpoint: https://otel.example:4318/v1/traces\n  sample_ratio: 0.25\n"
    ));
    assert!(ok, "{out}");
}

#[tokio::test]
async fn cache_status_and_rate_limit_decisions_are_span_attributes() {
    let otlp = OtlpReceiver::start().await;
    let origin = ScriptedOrigin::start().await;
    origin.set(
        "/c",
        Reply::ok("cached body").header("cache-control", "max-age=60"),
    );
    origin.set_fallback(Reply::ok("ok"));
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  pool:
    servers: [{{ address: "{}" }}]
routes:
  - name: cached
    match: {{ path: /c }}
    upstream: pool
    cache: {{ enabled: true }}
  - name: limited
    match: {{ path: /l }}
    upstream: pool
    rate_limit: {{ requests_per_second: 1, burst: 0, key: route }}
tracing:
  enabled: true
  otlp_endpoint: "{}"
  scheduled_delay_ms: 20
"#,
        origin.addr,
        otlp.endpoint()
    ));
    let c = client();
    // One at a time: the first /c fills the cache, the first /l spends the only token.
    let mut got = Vec::new();
    for p in ["/c", "/c", "/l", "/l"] {
        got.push(
            c.get(gw.url(p))
                .send()
                .await
                .expect("request")
                .status()
                .as_u16(),
        );
    }
    assert_eq!(&got[..2], &[200, 200]);
    assert_eq!(got[3], 429, "{got:?}");

    let spans = otlp.wait_spans(6, Duration::from_secs(10)).await;
    let servers = |route: &str| -> Vec<ReceivedSpan> {
        spans
            .iter()
            .filter(|s| s.kind == 2 && s.attr("avx.route") == Some(route))
            .cloned()
            .collect()
    };
    let hit = servers("cached")
        .into_iter()
        .find(|s| s.attr("avx.cache_status") == Some("HIT"))
        .unwrap_or_else(|| panic!("no HIT server span in {spans:#?}"));
    assert!(
        attempts_of(&spans, &hit).is_empty(),
        "a HIT asks no upstream"
    );
    let refused = servers("limited")
        .into_iter()
        .find(|s| s.attr("avx.decision") == Some("rate_limited"))
        .unwrap_or_else(|| panic!("no rate_limited server span in {spans:#?}"));
    assert_eq!(refused.attr("avx.rate_limit.allowed"), Some("false"));
    assert_eq!(refused.attr("http.response.status_code"), Some("429"));
    assert!(attempts_of(&spans, &refused).is_empty());
    let admitted = servers("limited")
        .into_iter()
        .find(|s| s.attr("avx.rate_limit.allowed") == Some("true"))
        .expect("an admitted /l");
    assert_eq!(admitted.attr("avx.rate_limit.remaining"), Some("0"));
}

#[tokio::test]
async fn spans_are_exported_to_an_https_collector() {
    let (otlp, ca_pem) = OtlpReceiver::start_tls().await;
    let up = TestUpstream::start("origin").await;
    // The collector's CA is the gateway's only root (SSL_CERT_FILE, read by the connector).
    let dir = crate::harness::TestDir::new();
    let ca = dir.write("ca.pem", &ca_pem);
    let wrapper = dir.write(
        "gw.sh",
        &format!(
            "#!/bin/sh\nSSL_CERT_FILE={} exec {} \"$@\"\n",
            ca.display(),
            crate::harness::gateway::binary()
        ),
    );
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod wrapper");
    let yaml = format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  pool:
    servers: [{{ address: "{}" }}]
routes:
  - name: api
    match: {{ path_prefix: / }}
    upstream: pool
tracing:
  enabled: true
  otlp_endpoint: "{}"
  scheduled_delay_ms: 20
"#,
        up.addr,
        otlp.endpoint()
    );
    let gw = GatewayProcess::start_binary(&wrapper.display().to_string(), &yaml);
    let (status, _) = get(&gw, "/tls", &[]).await;
    assert_eq!(status, 200);
    let spans = otlp.wait_spans(2, Duration::from_secs(10)).await;
    assert_eq!(spans.len(), 2, "{spans:#?}\n{}", gw.log());
    assert!(spans
        .iter()
        .any(|s| s.kind == 2 && s.attr("url.path") == Some("/tls")));

    // Without that root the certificate is refused: the export fails and its spans count
    // as dropped.
    let untrusting = gateway_at(&[up.addr.to_string()], &otlp.endpoint(), "");
    get(&untrusting, "/tls", &[]).await;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metric(&untrusting, "avx_tracing_spans_dropped_total").await >= Some(2.0)
        })
        .await,
        "{}",
        untrusting.log()
    );
    assert_eq!(otlp.spans().len(), 2);
}
