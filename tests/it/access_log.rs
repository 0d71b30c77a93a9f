//! The access log: JSON and combined lines in a file, escaping, and reopening on SIGUSR1.

use crate::harness::{client, wait_until, GatewayProcess, TestUpstream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A gateway over `up` logging to `{dir}/access.log` in `format`; route `limited` allows one
/// request per second.
fn gateway(up: &TestUpstream, format: &str) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
access_log:
  enabled: true
  path: "{{dir}}/access.log"
  format: {format}
upstreams:
  pool:
    servers: [{{ address: "{}" }}]
routes:
  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: pool
    rate_limit: {{ requests_per_second: 1, burst: 0, key: route }}
  - name: api
    match: {{ path_prefix: /api }}
    upstream: pool
"#,
        up.addr
    ))
}

fn log_path(gw: &GatewayProcess) -> PathBuf {
    gw.dir().join("access.log")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until the file at `path` has a line containing `needle`; returns it.
async fn wait_line(path: &Path, needle: &str) -> String {
    let found = wait_until(Duration::from_secs(5), || async {
        lines(path).iter().any(|l| l.contains(needle))
    })
    .await;
    assert!(
        found,
        "no line with {needle:?} in {}:\n{}",
        path.display(),
        lines(path).join("\n")
    );
    lines(path)
        .into_iter()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
}

/// GET with a request id (and optional User-Agent); returns the status.
async fn get(gw: &GatewayProcess, path: &str, id: &str, ua: Option<&str>) -> u16 {
    let mut req = client().get(gw.url(path)).header("x-request-id", id);
    if let Some(ua) = ua {
        req = req.header("user-agent", ua);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    resp.bytes().await.expect("body");
    status
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_every_field() {
    let up = TestUpstream::start("pool").await;
    let gw = gateway(&up, "json");
    let path = log_path(&gw);
    assert_eq!(
        get(&gw, "/api/users?id=7", "json-ok-1", Some("tester \"q\"")).await,
        200
    );
    assert_eq!(get(&gw, "/nowhere", "json-404-1", None).await, 404);
    assert_eq!(get(&gw, "/limited/a", "json-lim-1", None).await, 200);
    assert_eq!(get(&gw, "/limited/b", "json-lim-2", None).await, 429);

    let ok = json(&wait_line(&path, "json-ok-1").await);
    let time = ok["time"].as_str().expect("time");
    assert_eq!(time.len(), "2024-01-01T00:00:00.000Z".len(), "{time}");
    assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(ok["request_id"], "json-ok-1");
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["host"], gw.addr.to_string());
    assert_eq!(ok["path"], "/api/users?id=7");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["status"], 200);
    assert!(ok["bytes"].as_u64().is_some_and(|b| b > 0), "{ok}");
    assert!(ok["duration_ms"].as_f64().is_some_and(|d| d > 0.0), "{ok}");
    assert_eq!(ok["route"], "api");
    assert_eq!(ok["upstream"], "pool");
    assert_eq!(ok["upstream_addr"], up.addr.to_string());
    let up_ms = ok["upstream_duration_ms"]
        .as_f64()
        .expect("upstream duration");
    assert!(
        up_ms > 0.0 && up_ms <= ok["duration_ms"].as_f64().unwrap(),
        "{ok}"
    );
    assert!(ok["cache_status"].is_null(), "{ok}");
    assert!(ok["decision"].is_null(), "{ok}");
    assert_eq!(ok["user_agent"], "tester \"q\"");

    let missing = json(&wait_line(&path, "json-404-1").await);
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["decision"], "no_route");
    assert!(missing["route"].is_null() && missing["upstream"].is_null());
    assert!(missing["upstream_duration_ms"].is_null());

    let limited = json(&wait_line(&path, "json-lim-2").await);
    assert_eq!(limited["status"], 429);
    assert_eq!(limited["decision"], "rate_limited");
    assert_eq!(limited["route"], "limited");
    assert!(limited["upstream_addr"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_follow_nginx_and_escape_quotes() {
    let up = TestUpstream::start("pool").await;
    let gw = gateway(&up, "combined");
    let path = log_path(&gw);
    assert_eq!(
        get(&gw, "/api/x?y=1", "comb-1", Some("agent \"quoted\" \\ end")).await,
        200
    );
    let line = wait_line(&path, "comb-1").await;
    // 127.0.0.1 - - [27/Nov/2026:01:02:03 +0000] "GET /api/x?y=1 HTTP/1.1" 200 123 "-" "ua" "id" 0.001
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains(" +0000] \"GET /api/x?y=1 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(
        line.contains(" \"-\" \"agent \\x22quoted\\x22 \\x5C end\" \"comb-1\" "),
        "{line}"
    );
    let duration = line.rsplit(' ').next().unwrap();
    assert!(duration.parse::<f64>().is_ok(), "{line}");
    assert_eq!(
        line.matches('"').count(),
        8,
        "only the 4 fields are quoted: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_file_after_rotation() {
    let up = TestUpstream::start("pool").await;
    let mut gw = gateway(&up, "json");
    let path = log_path(&gw);
    assert_eq!(get(&gw, "/api/a", "before-rotation", None).await, 200);
    wait_line(&path, "before-rotation").await;

    let rotated = gw.dir().join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    gw.signal("USR1");
    // The writer reopens (creating the file) within one flush interval.
    assert!(
        wait_until(Duration::from_secs(5), || async { path.exists() }).await,
        "no new file after SIGUSR1:\n{}",
        gw.log()
    );
    assert_eq!(get(&gw, "/api/b", "after-rotation", None).await, 200);
    wait_line(&path, "after-rotation").await;

    let old = lines(&rotated).join("\n");
    assert!(
        old.contains("before-rotation") && !old.contains("after-rotation"),
        "{old}"
    );
    assert!(!lines(&path).join("\n").contains("before-rotation"));
    assert!(gw.is_running(), "SIGUSR1 must not stop the gateway");
}
