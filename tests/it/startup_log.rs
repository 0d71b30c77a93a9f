//! What a clean start logs: one line per listener, nothing at WARN or ERROR, no other chatter.

use crate::harness::{client, wait_until, GatewayProcess, Reply, ScriptedOrigin};
use std::time::Duration;

fn shipped_config() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/gateway.yaml");
    std::fs::read_to_string(path).expect("read conf/gateway.yaml")
}

/// `(level, message)` of each `[TIME LEVEL target] message` line of env_logger's format.
fn records(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let (head, msg) = l.strip_prefix('[')?.split_once("] ")?;
            let level = head.split_whitespace().nth(1)?;
            Some((level.to_string(), msg.to_string()))
        })
        .collect()
}

/// Asserts the start-up log is exactly `expected` (in any order) at INFO, with nothing at WARN
/// or ERROR. DEBUG and TRACE lines (a `RUST_LOG` set by whoever runs the tests) are ignored.
fn assert_clean_start(log: &str, expected: &[String]) {
    let recs = records(log);
    let loud: Vec<_> = recs
        .iter()
        .filter(|(level, _)| level == "WARN" || level == "ERROR")
        .collect();
    assert!(
        loud.is_empty(),
        "start-up logged {loud:?}; whole log:\n{log}"
    );
    let mut info: Vec<&str> = recs
        .iter()
        .filter(|(level, _)| level == "INFO")
        .map(|(_, m)| m.as_str())
        .collect();
    info.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(
        info, want,
        "start-up should log one line per listener and nothing else; whole log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_default_config_starts_with_one_line_per_listener() {
    let shipped = shipped_config();
    for fixed in [
        "0.0.0.0:8080",
        "127.0.0.1:9090",
        "/tmp/avx-gateway.pid",
        "/tmp/avx-gateway-upgrade.sock",
    ] {
        assert!(
            shipped.contains(fixed),
            "conf/gateway.yaml changed: {fixed}"
        );
    }
    let copy = shipped
        .replace("0.0.0.0:8080", "{listen}")
        .replace("127.0.0.1:9090", "{admin}")
        .replace("/tmp/avx-gateway.pid", "{dir}/gw.pid")
        .replace("/tmp/avx-gateway-upgrade.sock", "{dir}/upgrade.sock");
    let gw = GatewayProcess::start(&copy);
    let resp = client().get(gw.url("/api/test")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_clean_start(
        &gw.log(),
        &[
            format!("listening on {}", gw.addr),
            format!("admin listening on {}", gw.admin),
        ],
    );
}

/// The cache's header codec warned about a missing compression dictionary when first used, at
/// every start with a caching route; health checks, a breaker and a rate limit are on too, and
/// a first cached response is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_cache_health_checks_and_limits_is_clean() {
    let origin = ScriptedOrigin::start().await;
    origin.set("/health", Reply::ok("ok"));
    origin.set(
        "/a",
        Reply::ok("cached").header("cache-control", "max-age=60"),
    );
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  origin:
    servers: [{{ address: "{origin}" }}]
    health_check: {{ type: http, path: /health, interval_ms: 100, timeout_ms: 500 }}
    circuit_breaker: {{}}
routes:
  - name: cached
    match: {{ path_prefix: / }}
    upstream: origin
    cache: {{ enabled: true }}
    rate_limit: {{ requests_per_second: 1000, burst: 100, key: client_ip }}
"#,
        origin = origin.addr
    ));
    let c = client();
    let resp = c.get(gw.url("/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // A HIT reads back what the first request stored, through the same codec.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let r = c.get(gw.url("/a")).send().await.unwrap();
            r.headers()
                .get("x-cache-status")
                .is_some_and(|v| v == "HIT")
        })
        .await,
        "no cache HIT for /a; log:\n{}",
        gw.log()
    );
    assert_clean_start(
        &gw.log(),
        &[
            format!("listening on {}", gw.addr),
            format!("admin listening on {}", gw.admin),
        ],
    );
}
