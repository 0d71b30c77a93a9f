//! The shipped default config and a basic proxied request.

use crate::harness::{client, GatewayProcess, TestUpstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_to_an_upstream_and_sets_forwarding_headers() {
    let up = TestUpstream::start("a").await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {} }}]
routes:
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
"#,
        up.addr
    ));
    let resp = client()
        .get(gw.url("/api/x?q=1"))
        .header("x-request-id", "req-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["uri"], "/api/x?q=1");
    assert_eq!(body["headers"]["x-request-id"], "req-123");
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
    assert_eq!(body["headers"]["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(up.hits(), 1);
}
