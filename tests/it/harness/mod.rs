//! The shared test harness: real upstream servers and the real gateway binary on loopback.

#![allow(dead_code)]

pub mod dns;
pub mod faulty;
pub mod fetch;
pub mod gateway;
pub mod h2_frames;
pub mod load;
pub mod otlp;
pub mod raw_http;
pub mod raw_origin;
pub mod redis;
pub mod scripted;
pub mod tls_upstream;
pub mod upstream;
pub mod websocket;

pub use faulty::{Fault, FaultyUpstream};
pub use fetch::{fetch, try_fetch, Fetched};
pub use gateway::{check_config, GatewayProcess, TestDir};
pub use h2_frames::H2Client;
pub use load::{pid_running, Load, PidGuard};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use raw_http::RawConn;
pub use raw_origin::{OriginReply, RawOrigin};
pub use redis::{RedisCluster, RedisServer};
pub use scripted::{http_date, Reply, ScriptedOrigin};
pub use tls_upstream::TlsUpstream;
pub use upstream::TestUpstream;
pub use websocket::WsEchoUpstream;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// An unused loopback port (bound then released), never one this process handed out before:
/// the kernel may give a released port again at once, and two of them in one config (a
/// listener and the admin address, say) make the gateway refuse it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no loopback port this process has not handed out yet");
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A loopback address that refuses connections: port 1 on 127.0.0.`2 + i`. Unlike a released
/// ephemeral port, no parallel test can start listening there.
pub fn refused_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 2 + i], 1))
}

/// Accepts connections on `listener` until the returned task is aborted (which also ends the
/// open ones), serving each with the future `conn` returns for it; finished connections are
/// reaped as new ones arrive. Every test server in this harness runs on it.
pub fn accept_loop<F, Fut>(
    listener: tokio::net::TcpListener,
    conn: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            conns.spawn(conn(sock));
            while conns.try_join_next().is_some() {}
        }
    })
}

/// Polls `cond` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A plain HTTP/1.1 client that never pools connections across tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// A client whose connections come from `127.0.0.N`, so the gateway sees a distinct peer IP.
pub fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// The value of the `/metrics` sample written exactly as `series` (name and labels), from an
/// admin listener without a token; `None` when absent or unreachable.
pub async fn metric(gw: &GatewayProcess, series: &str) -> Option<f64> {
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits (bounded) until [`metric`] reads `want`: metrics are recorded when a request ends,
/// just after its client has the answer.
pub async fn wait_metric(gw: &GatewayProcess, series: &str, want: f64) -> bool {
    wait_until(Duration::from_secs(5), || async {
        metric(gw, series).await == Some(want)
    })
    .await
}

/// Asserts that every `(series, value)` reaches its value ([`wait_metric`], each bounded).
pub async fn assert_metrics(gw: &GatewayProcess, expected: &[(&str, f64)]) {
    for &(series, want) in expected {
        assert!(
            wait_metric(gw, series, want).await,
            "{series} is not {want}"
        );
    }
}

/// `promtool`: `$PROMTOOL`, then `PATH`, then the copy `scripts/setup.sh` unpacks.
pub fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL") {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/promtool");
        local.is_file().then_some(local)
    })
}
