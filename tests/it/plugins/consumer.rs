//! The consumer end to end, for a JWT: `consumer_claim` (default `sub`, or another claim) names
//! it; it keys `rate_limit.key: consumer`, fills `$consumer`, the access log's `consumer`
//! (JSON) and `$remote_user` (combined); and only names written in the config (key_auth's)
//! become `avx_consumer_requests_total` labels, a JWT subject never does.

use super::jwt::{now, sign};
use super::{access_log, access_log_lines, gateway, metrics_text, sha256_hex};
use crate::harness::{assert_metrics, client, fetch, Fetched, GatewayProcess, RawOrigin};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

const SECRET: &str = "a consumer test secret of 32 bytes or more";

fn routes() -> String {
    format!(
        r#"
  - name: sub
    match: {{ path_prefix: /sub/ }}
    upstream: backend
    rate_limit: {{ requests_per_second: 0.001, burst: 1, key: consumer }}
    plugins:
      - jwt: {{ keys: [{{ alg: HS256, secret: "{SECRET}" }}] }}
      - request_headers: {{ set: {{ x-consumer: "$consumer" }} }}
  - name: claim
    match: {{ path_prefix: /claim/ }}
    upstream: backend
    plugins:
      - jwt: {{ keys: [{{ alg: HS256, secret: "{SECRET}" }}], consumer_claim: email }}
      - request_headers: {{ set: {{ x-consumer: "$consumer" }} }}
  - name: keys
    match: {{ path_prefix: /keys/ }}
    upstream: backend
    plugins:
      - key_auth: {{ consumers: [{{ name: alice, key_sha256: "{alice}" }}] }}
      - request_headers: {{ set: {{ x-consumer: "$consumer" }} }}
"#,
        alice = sha256_hex("alice-key"),
    )
}

/// An HS256 token for the test secret with `claims` plus an `exp` an hour ahead.
fn token(mut claims: serde_json::Value) -> String {
    claims["exp"] = json!(now() + 3600);
    sign(
        Algorithm::HS256,
        None,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

async fn get(gw: &GatewayProcess, path: &str, token: &str) -> Fetched {
    fetch(
        &client(),
        "GET",
        &gw.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn a_jwt_claim_names_the_consumer_for_limits_headers_logs_and_metrics() {
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &routes(), &access_log("json"));
    // A subject that is also a configured key_auth name elsewhere: still not a label.
    let alice = token(json!({ "sub": "alice" }));
    let bob = token(json!({ "sub": "bob" }));

    // rate_limit.key: consumer, burst 1: each subject gets two requests, from the same
    // client IP; alice's third is limited while bob still has his own bucket.
    for p in ["/sub/a1", "/sub/a2"] {
        assert_eq!(get(&gw, p, &alice).await.status, 200, "{p}");
    }
    assert_eq!(
        get(&gw, "/sub/a3", &alice).await.status,
        429,
        "alice's bucket is empty"
    );
    assert_eq!(
        get(&gw, "/sub/b1", &bob).await.status,
        200,
        "bob, same client IP, has a bucket of his own"
    );

    // consumer_claim: email; `sub` is then not the consumer. Without the claim the request is
    // still admitted (the token verified) but has no consumer.
    let carol = token(json!({ "sub": "sub-not-used", "email": "carol@example.com" }));
    assert_eq!(get(&gw, "/claim/c1", &carol).await.status, 200);
    let anonymous = token(json!({ "sub": "sub-not-used" }));
    assert_eq!(get(&gw, "/claim/none", &anonymous).await.status, 200);

    let keyed = fetch(
        &client(),
        "GET",
        &gw.url("/keys/k1"),
        &[("x-api-key", "alice-key")],
    )
    .await;
    assert_eq!(keyed.status, 200);

    // What the origin received: `$consumer` rendered per request.
    let seen = origin.requests();
    let consumers: Vec<(&str, Vec<&str>)> = seen
        .iter()
        .filter(|r| r.path() != "/claim/none")
        .map(|r| (r.path(), r.header_all("x-consumer")))
        .collect();
    assert_eq!(
        consumers,
        [
            ("/sub/a1", vec!["alice"]),
            ("/sub/a2", vec!["alice"]),
            ("/sub/b1", vec!["bob"]),
            ("/claim/c1", vec!["carol@example.com"]),
            ("/keys/k1", vec!["alice"]),
        ],
        "{}",
        origin.describe()
    );
    assert_eq!(seen.len(), 6, "{}", origin.describe());

    // Metrics: JWT identities are `other` (the 429 too: it had a consumer); key_auth's
    // configured name is its own label.
    assert_metrics(
        &gw,
        &[
            (
                r#"avx_consumer_requests_total{consumer="other",route="sub"}"#,
                4.0,
            ),
            (
                r#"avx_consumer_requests_total{consumer="other",route="claim"}"#,
                1.0,
            ),
            (
                r#"avx_consumer_requests_total{consumer="alice",route="keys"}"#,
                1.0,
            ),
            (r#"avx_errors_total{kind="rate_limited",route="sub"}"#, 1.0),
        ],
    )
    .await;
    let text = metrics_text(&gw).await;
    let consumer_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("avx_consumer_requests_total{"))
        .collect();
    assert_eq!(
        consumer_lines.len(),
        3,
        "only the three series above: {consumer_lines:?}"
    );
    for subject in ["bob", "carol@example.com", "sub-not-used"] {
        assert!(
            !text.contains(subject),
            "a JWT identity {subject:?} reached /metrics:\n{consumer_lines:?}"
        );
    }

    // The access log's `consumer` field: the JWT identity as it is (the limited request
    // included), null where none was established; no token is logged.
    let lines = access_log_lines(&gw, 7).await;
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let by_path = |p: &str| {
        parsed
            .iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}:\n{lines:#?}"))
    };
    for (path, consumer, status) in [
        ("/sub/a1", json!("alice"), 200),
        ("/sub/a2", json!("alice"), 200),
        ("/sub/a3", json!("alice"), 429),
        ("/sub/b1", json!("bob"), 200),
        ("/claim/c1", json!("carol@example.com"), 200),
        ("/claim/none", json!(null), 200),
        ("/keys/k1", json!("alice"), 200),
    ] {
        let l = by_path(path);
        assert_eq!(l["consumer"], consumer, "{path}: {l}");
        assert_eq!(l["status"], status, "{path}: {l}");
    }
    assert_eq!(by_path("/sub/a3")["decision"], "rate_limited");
    for t in [&alice, &bob, &carol] {
        assert!(
            !lines.iter().any(|l| l.contains(t.as_str())),
            "a token was logged"
        );
    }
}

#[tokio::test]
async fn the_consumer_is_the_combined_logs_remote_user() {
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &routes(), &access_log("combined"));
    assert_eq!(
        get(&gw, "/sub/dana", &token(json!({ "sub": "dana" })))
            .await
            .status,
        200
    );
    // A space would split the field: it is written as \x20.
    assert_eq!(
        get(
            &gw,
            "/claim/eve",
            &token(json!({ "sub": "x", "email": "eve smith" }))
        )
        .await
        .status,
        200
    );
    let keyed = fetch(
        &client(),
        "GET",
        &gw.url("/keys/alice"),
        &[("x-api-key", "alice-key")],
    )
    .await;
    assert_eq!(keyed.status, 200);
    let refused = fetch(&client(), "GET", &gw.url("/keys/nobody"), &[]).await;
    assert_eq!(refused.status, 401);

    let lines = access_log_lines(&gw, 4).await;
    let line_for = |path: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("\"GET {path} HTTP/1.1\"")))
            .unwrap_or_else(|| panic!("no line for {path}:\n{lines:#?}"))
    };
    for (path, user) in [
        ("/sub/dana", "dana"),
        ("/claim/eve", "eve\\x20smith"),
        ("/keys/alice", "alice"),
        ("/keys/nobody", "-"),
    ] {
        let l = line_for(path);
        assert!(
            l.starts_with(&format!("127.0.0.1 - {user} [")),
            "{path}: expected remote user {user:?}: {l}"
        );
    }
}
