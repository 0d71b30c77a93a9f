//! `key_auth`: hashed keys, every source, stripping, the 401 challenge, the consumer as a
//! rate-limit key and in the access log.

use super::{gateway, sha256_hex};
use crate::harness::{assert_metrics, client, fetch, wait_until, OriginReply, RawOrigin};
use std::time::Duration;

fn routes() -> String {
    format!(
        r#"
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
    plugins:
      - key_auth:
          from: [header:x-api-key, query:api_key, header:authorization]
          consumers:
            - {{ name: alice, key_sha256: "{alice}" }}
            - {{ name: bob, key_sha256: "{bob}" }}
            - {{ name: dave, key_sha256: "{dave}" }}
            # cargo sets CARGO_PKG_NAME for every test process, and the gateway inherits it.
            - {{ name: carol, key_env: CARGO_PKG_NAME }}
  - name: cached
    match: {{ path_prefix: /cached/ }}
    upstream: backend
    cache: {{ enabled: true }}
    plugins:
      - key_auth:
          consumers:
            - {{ name: alice, key_sha256: "{alice}" }}
            - {{ name: dave, key_sha256: "{dave}" }}
  - name: limited
    match: {{ path_prefix: /limited/ }}
    upstream: backend
    plugins:
      - key_auth:
          from: [header:x-api-key, query:api_key]
          consumers:
            - {{ name: alice, key_sha256: "{alice}" }}
            - {{ name: dave, key_sha256: "{dave}" }}
    rate_limit: {{ requests_per_second: 0.001, burst: 1, key: consumer }}
  - name: kept
    match: {{ path_prefix: /kept/ }}
    upstream: backend
    plugins:
      - key_auth:
          consumers: [{{ name: alice, key_sha256: "{alice}" }}]
          strip: false
"#,
        alice = sha256_hex("alice-key"),
        bob = sha256_hex("bob-key"),
        dave = sha256_hex("dave-key"),
    )
}

const ACCESS_LOG: &str =
    "access_log:\n  enabled: true\n  format: json\n  path: \"{dir}/access.log\"\n";

#[tokio::test]
async fn key_auth_admits_known_keys_and_challenges_the_rest() {
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &routes(), ACCESS_LOG);
    let c = client();

    let none = fetch(&c, "GET", &gw.url("/api/a"), &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("ApiKey"));
    let wrong = fetch(&c, "GET", &gw.url("/api/a"), &[("x-api-key", "alice-kex")]).await;
    assert_eq!(wrong.status, 401);
    let json = fetch(
        &c,
        "GET",
        &gw.url("/api/a"),
        &[("x-api-key", "nope"), ("accept", "application/json")],
    )
    .await;
    assert_eq!(json.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&json.body).expect("a JSON body");
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(
        origin.count(),
        0,
        "nothing unauthenticated reached the origin"
    );

    let a = fetch(&c, "GET", &gw.url("/api/a"), &[("x-api-key", "alice-key")]).await;
    assert_eq!(a.status, 200);
    let b = fetch(&c, "GET", &gw.url("/api/b?api_key=bob-key&x=1"), &[]).await;
    assert_eq!(b.status, 200, "the query source");
    let carol = fetch(
        &c,
        "GET",
        &gw.url("/api/c"),
        &[(
            "authorization",
            &format!("Bearer {}", env!("CARGO_PKG_NAME")),
        )],
    )
    .await;
    assert_eq!(
        carol.status, 200,
        "key_env, through `Authorization: Bearer`"
    );

    let seen = origin.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].header("x-api-key").is_none(), "the key is stripped");
    assert_eq!(
        seen[1].target, "/api/b?x=1",
        "the key is stripped from the query"
    );
    assert!(seen[2].header("authorization").is_none());

    let kept = fetch(&c, "GET", &gw.url("/kept/x"), &[("x-api-key", "alice-key")]).await;
    assert_eq!(kept.status, 200);
    assert_eq!(
        origin.requests()[3].header("x-api-key"),
        Some("alice-key"),
        "strip: false keeps it"
    );

    // An authenticated answer is private to the cache even though the key was stripped
    // before it went upstream: max-age alone does not let it be stored; `public` does.
    origin.reply_for(
        "/cached/me",
        OriginReply::new(200, "alice's page").header("cache-control", "max-age=60"),
    );
    origin.reply_for(
        "/cached/shared",
        OriginReply::new(200, "for all").header("cache-control", "public, max-age=60"),
    );
    for key in ["alice-key", "alice-key", "dave-key"] {
        let r = fetch(&c, "GET", &gw.url("/cached/me"), &[("x-api-key", key)]).await;
        assert_eq!(r.status, 200);
        assert_ne!(r.cache(), "HIT", "{key} got a stored authenticated answer");
    }
    let mut shared = Vec::new();
    for _ in 0..2 {
        let r = fetch(
            &c,
            "GET",
            &gw.url("/cached/shared"),
            &[("x-api-key", "dave-key")],
        )
        .await;
        shared.push(r.cache().to_string());
    }
    assert_eq!(
        shared[1], "HIT",
        "an explicitly public answer is shared: {shared:?}"
    );

    // The rate limit is keyed on the consumer (burst 1: two requests pass): alice's third
    // request is limited whatever key source she uses, from the same client IP where dave
    // still has his own bucket.
    for _ in 0..2 {
        let r = fetch(
            &c,
            "GET",
            &gw.url("/limited/me"),
            &[("x-api-key", "alice-key")],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let again = fetch(&c, "GET", &gw.url("/limited/me?api_key=alice-key"), &[]).await;
    assert_eq!(again.status, 429, "alice's bucket is empty");
    let dave = fetch(
        &c,
        "GET",
        &gw.url("/limited/me"),
        &[("x-api-key", "dave-key")],
    )
    .await;
    assert_eq!(dave.status, 200, "dave has a bucket of his own");
    // Failed attempts have no consumer: they are charged to the client IP, so guessing is
    // limited too (burst 1: two refusals, then 429).
    let mut guesses = Vec::new();
    for i in 0..3 {
        let k = format!("guess-{i}");
        guesses.push(
            fetch(&c, "GET", &gw.url("/limited/me"), &[("x-api-key", &k)])
                .await
                .status,
        );
    }
    assert_eq!(guesses, [401, 401, 429]);
    let unauth = fetch(&c, "GET", &gw.url("/api/a"), &[]).await;
    assert_eq!(
        unauth.status, 401,
        "a route without a limit still answers 401"
    );

    // A bounded metric label: consumer names come from the config.
    assert_metrics(
        &gw,
        &[
            (
                r#"avx_consumer_requests_total{consumer="alice",route="api"}"#,
                1.0,
            ),
            (
                r#"avx_consumer_requests_total{consumer="alice",route="limited"}"#,
                3.0,
            ),
            (
                r#"avx_errors_total{kind="rate_limited",route="limited"}"#,
                2.0,
            ),
            (
                r#"avx_consumer_requests_total{consumer="bob",route="api"}"#,
                1.0,
            ),
            (r#"avx_errors_total{kind="unauthorized",route="api"}"#, 4.0),
        ],
    )
    .await;

    // The consumer is in the access log, and no key is.
    let log_path = gw.dir().join("access.log");
    let logged = wait_until(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log_path)
            .map(|t| t.lines().count() >= 14)
            .unwrap_or(false)
    })
    .await;
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(logged, "access log:\n{text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let by_path = |p: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|lp| lp.starts_with(p)))
            .unwrap_or_else(|| panic!("no line for {p}:\n{text}"))
    };
    assert_eq!(by_path("/api/a")["decision"], "unauthorized");
    assert_eq!(by_path("/api/b")["consumer"], "bob");
    assert_eq!(by_path("/api/c")["consumer"], "carol");
    for key in ["alice-key", "bob-key", "dave-key"] {
        assert!(!text.contains(key), "a key was logged:\n{text}");
    }
}
