//! Plugin benchmarks: each built-in's per-request hook, on plugins built through the same
//! registry the gateway uses. `cargo bench --bench plugin_bench -- jwt`.

use avx_gateway::config::{KeyPath, PluginSpec};
use avx_gateway::edge::PathPolicy;
use avx_gateway::plugin::{
    Consumer, Flow, Plugin, PluginChain, Registry, RequestInfo, RequestView, UpstreamView,
};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use http::HeaderValue;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use pingora_http::RequestHeader;
use std::sync::Arc;

fn build(yaml: &str) -> Vec<Arc<dyn Plugin>> {
    let specs: Vec<PluginSpec> = serde_yaml::from_str(yaml).expect("plugin yaml");
    Registry::default()
        .build_list(
            &specs,
            &KeyPath::root().key("plugins"),
            &PathPolicy::default(),
        )
        .expect("plugins build")
}

fn info(id: &HeaderValue) -> RequestInfo<'_> {
    RequestInfo {
        client_ip: Some("10.1.2.3".parse().expect("ip")),
        host: Some("api.example.com"),
        tls: true,
        route: "api",
        request_id: Some(id),
        upstream: Some("backend"),
    }
}

fn request(headers: &[(&str, &str)]) -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/api/v1/items?x=1", None).expect("request");
    for (k, v) in headers {
        r.append_header(k.to_string(), *v).expect("header");
    }
    r
}

/// Times one `request` hook over a fresh copy of `req` (the copy is not timed).
fn bench_request(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    plugin: &Arc<dyn Plugin>,
    req: &RequestHeader,
    expect_continue: bool,
) {
    let id = HeaderValue::from_static("req-1");
    c.bench_function(name, |b| {
        b.iter_batched(
            || (req.clone(), None::<Consumer>),
            |(mut r, mut consumer)| {
                let mut view = RequestView::new(&mut r, info(&id), &mut consumer);
                let flow = rt.block_on(plugin.request(&mut view));
                assert_eq!(matches!(flow, Flow::Continue), expect_continue, "{name}");
                black_box(consumer)
            },
            BatchSize::SmallInput,
        )
    });
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn plugins(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("avx-plugin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // A route without plugins: the chain the proxy walks at every phase.
    let empty = PluginChain::new(Vec::new());
    c.bench_function("chain/empty_route_all_phases", |b| {
        b.iter(|| {
            let e = black_box(&empty);
            black_box(
                e.before_limit().is_empty() && e.after_limit().is_empty() && e.all().is_empty(),
            )
        })
    });

    // jwt: HS256 and ES256 (the key pair made here), with iss/aud/exp checks.
    let secret = "a bench secret that is 32 bytes!";
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec key");
    std::fs::write(dir.join("ec.pem"), ec.public_key_pem()).expect("write");
    let jwt = build(&format!(
        "- jwt:\n    keys:\n      - {{ alg: HS256, secret: \"{secret}\" }}\n      - {{ alg: ES256, public_key_file: \"{}\" }}\n    issuer: https://auth.test\n    audience: [api]\n    forward_claims: {{ sub: x-user-id }}\n",
        dir.join("ec.pem").display()
    ));
    let claims = serde_json::json!({"sub": "u1", "iss": "https://auth.test", "aud": "api", "exp": now() + 86_400});
    let hs = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("hs token");
    let es = encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec"),
    )
    .expect("es token");
    for (name, token) in [("jwt/hs256", &hs), ("jwt/es256", &es)] {
        let req = request(&[("authorization", &format!("Bearer {token}"))]);
        bench_request(c, &rt, name, &jwt[0], &req, true);
    }

    // key_auth: 1,000 consumers, found by digest.
    let mut consumers = String::new();
    for i in 0..1000 {
        let d = ring::digest::digest(&ring::digest::SHA256, format!("key-{i}").as_bytes());
        let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        consumers.push_str(&format!(
            "      - {{ name: c{i}, key_sha256: \"{hex}\" }}\n"
        ));
    }
    let key_auth = build(&format!("- key_auth:\n    consumers:\n{consumers}"));
    bench_request(
        c,
        &rt,
        "key_auth/1000_consumers",
        &key_auth[0],
        &request(&[("x-api-key", "key-777")]),
        true,
    );

    // basic_auth: bcrypt at cost 10 (the htpasswd -B default); the first check hashes, later
    // ones hit the verified-credential cache.
    let hash = bcrypt::hash("s3cret", 10).expect("bcrypt");
    let basic = build(&format!(
        "- basic_auth:\n    users: {{ alice: \"{hash}\" }}\n"
    ));
    let auth = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret
    c.bench_function("basic_auth/bcrypt_cost10_uncached", |b| {
        b.iter(|| bcrypt::verify(black_box("s3cret"), black_box(&hash)).expect("verify"))
    });
    bench_request(
        c,
        &rt,
        "basic_auth/bcrypt_cost10_cached",
        &basic[0],
        &request(&[("authorization", auth)]),
        true,
    );

    // cors: a preflight answered, and an actual response decorated.
    let cors = build(
        "- cors:\n    allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n    allow_methods: [GET, POST]\n    allow_headers: [authorization, content-type]\n    allow_credentials: true\n    max_age_seconds: 600\n",
    );
    let mut pre = request(&[
        ("origin", "https://a.example.org"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "content-type, authorization",
        ),
    ]);
    pre.set_method(http::Method::OPTIONS);
    bench_request(c, &rt, "cors/preflight", &cors[0], &pre, false);
    bench_request(
        c,
        &rt,
        "cors/actual_request",
        &cors[0],
        &request(&[("origin", "https://app.example.com")]),
        true,
    );

    // ip_restriction over 10,000 CIDRs.
    let mut list = String::new();
    for i in 0..10_000u32 {
        let n = 0x0b00_0000 + i * 512;
        list.push_str(&format!(
            "{}.{}.{}.0/24, ",
            n >> 24,
            (n >> 16) & 255,
            (n >> 8) & 255
        ));
    }
    let ipr = build(&format!("- ip_restriction: {{ deny: [{list}] }}\n"));
    bench_request(
        c,
        &rt,
        "ip_restriction/10000_cidrs",
        &ipr[0],
        &request(&[]),
        true,
    );

    // request_headers: two fixed fields, one with variables, one removal.
    let headers = build(
        "- request_headers:\n    set: { x-env: prod, x-client: \"$client_ip\", x-who: \"$consumer@$route\" }\n    remove: [x-debug]\n",
    );
    let id = HeaderValue::from_static("req-1");
    let consumer = Consumer::external("alice");
    let base = request(&[("x-debug", "1"), ("accept", "*/*")]);
    c.bench_function("request_headers/set3_remove1", |b| {
        b.iter_batched(
            || base.clone(),
            |mut r| {
                let mut view = UpstreamView::new(&mut r, info(&id), Some(&consumer));
                rt.block_on(headers[0].upstream_request(&mut view));
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, plugins);
criterion_main!(benches);
