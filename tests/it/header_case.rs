//! `server.preserve_header_case`: header names on the wire, both ways, in both modes, the
//! client's and the origin's as well as those the gateway adds (pingora-http patch 1).

use crate::harness::{GatewayProcess, OriginReply, RawOrigin};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUEST: &[u8] =
    b"GET /hc HTTP/1.1\r\nHost: a.example\r\nX-Client-MiXeD: c\r\nuser-agent: raw\r\n\r\n";

fn config(origin: SocketAddr, preserve: bool) -> String {
    format!(
        "server:\n  workers: 1\n  pid_file: {{dir}}/gw.pid\n  upgrade_sock: {{dir}}/upgrade.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  preserve_header_case: {preserve}\nlisteners:\n  - address: {{listen}}\nupstreams:\n  backend:\n    servers: [{{ address: {origin} }}]\nroutes:\n  - {{ name: all, match: {{ path_prefix: / }}, upstream: backend, rate_limit: {{ requests_per_second: 1000, burst: 1000, key: route }} }}\n"
    )
}

/// Sends [`REQUEST`] twice on one connection (a pooled upstream connection for the second)
/// and returns the raw response heads the client received.
async fn heads(gw: SocketAddr) -> Vec<String> {
    let mut conn = tokio::net::TcpStream::connect(gw).await.expect("connect");
    let mut heads = Vec::new();
    for _ in 0..2 {
        conn.write_all(REQUEST).await.expect("send");
        let mut buf = Vec::new();
        // The origin's body is "ok" with a Content-Length: read up to the end of it.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut chunk = [0u8; 4096];
                let n = conn.read(&mut chunk).await.expect("read");
                assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    if buf.len() >= end + 4 + 2 {
                        return String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                    }
                }
            }
        })
        .await
        .expect("a whole response within 10 s");
        heads.push(got);
    }
    heads
}

async fn origin() -> RawOrigin {
    let origin = RawOrigin::start().await;
    origin.reply_for(
        "/hc",
        OriginReply::new(200, "ok")
            .header("X-Origin-MiXeD", "o")
            .header("content-type", "text/plain"),
    );
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_keep_their_case_by_default() {
    let origin = origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, true));
    let gw_heads = heads(gw.addr).await;
    for head in &gw_heads {
        assert!(head.contains("\r\nX-Origin-MiXeD: o\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/plain\r\n"), "{head}");
    }
    assert_eq!(origin.count(), 2);
    let raw = String::from_utf8_lossy(&origin.all_raw()).into_owned();
    assert_eq!(raw.matches("\r\nX-Client-MiXeD: c\r\n").count(), 2, "{raw}");
    assert_eq!(raw.matches("\r\nuser-agent: raw\r\n").count(), 2, "{raw}");
    gateway_headers(
        &raw,
        &gw_heads,
        &ADDED_KEPT.map(|names| names.map(String::from)),
    );
}

/// The names the gateway adds upstream, then downstream, as written when case is preserved.
const ADDED_KEPT: [[&str; 5]; 2] = [
    [
        "X-Forwarded-For: 127.0.0.1",
        "X-Forwarded-Proto: http",
        "X-Forwarded-Host: a.example",
        "X-Forwarded-Port: ",
        "X-Request-Id: ",
    ],
    [
        "X-Request-Id: ",
        "ratelimit-limit: 1000",
        "ratelimit-policy: ",
        "ratelimit-remaining: ",
        "ratelimit-reset: ",
    ],
];

/// Asserts that each request the origin received and each response head holds each name.
fn gateway_headers(raw: &str, heads: &[String], names: &[[String; 5]; 2]) {
    for name in &names[0] {
        let line = format!("\r\n{name}");
        assert_eq!(raw.matches(&line).count(), 2, "{name:?} upstream in {raw}");
    }
    for head in heads {
        for name in &names[1] {
            assert!(head.contains(&format!("\r\n{name}")), "{name:?} in {head}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_preserve_header_case_names_go_out_canonical() {
    let origin = origin().await;
    let gw = GatewayProcess::start(&config(origin.addr, false));
    let gw_heads = heads(gw.addr).await;
    for head in &gw_heads {
        // Pingora's canonical form: title case for the names it knows, lowercase otherwise.
        assert!(head.contains("\r\nx-origin-mixed: o\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
        assert!(!head.contains("MiXeD"), "{head}");
    }
    assert_eq!(origin.count(), 2);
    let raw = String::from_utf8_lossy(&origin.all_raw()).into_owned();
    assert_eq!(raw.matches("\r\nx-client-mixed: c\r\n").count(), 2, "{raw}");
    assert_eq!(raw.matches("\r\nuser-agent: raw\r\n").count(), 2, "{raw}");
    assert_eq!(raw.matches("\r\nHost: a.example\r\n").count(), 2, "{raw}");
    assert!(!raw.contains("MiXeD"), "{raw}");
    gateway_headers(
        &raw,
        &gw_heads,
        &ADDED_KEPT.map(|names| names.map(lower_name)),
    );
    for line in raw.lines().chain(gw_heads.iter().flat_map(|h| h.lines())) {
        assert!(!line.starts_with("X-"), "{line:?} should be lowercase");
    }
}

/// `Name: value` with the name in lowercase.
fn lower_name(line: &str) -> String {
    let (name, value) = line.split_once(':').expect("a header line");
    format!("{}:{value}", name.to_ascii_lowercase())
}
