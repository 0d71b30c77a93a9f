//! `jwt` HMAC secret sources on the success path: `secret_env` (the variable set on the
//! gateway process only), raw or `base64:`, and an inline `secret`, raw or `base64:`.

use super::jwt::{now, sign};
use crate::harness::{client, fetch, GatewayProcess, RawOrigin};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

/// Raw secrets (printable, so they can be written in YAML and in an environment variable).
const ENV_RAW: &str = "an env hs256 secret that has 32+ bytes";
const INLINE_RAW: &str = "an inline hs256 secret with 32+ bytes";
/// Binary secrets, given as `base64:`: not UTF-8, so only a decoded value can match them.
const ENV_BIN: [u8; 32] = [0xff; 32];
const INLINE_BIN: [u8; 48] = [0x80; 48];

fn b64(bytes: &[u8]) -> String {
    format!(
        "base64:{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn yaml(origin: &RawOrigin) -> String {
    let route = |name: &str, key: &str| {
        format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    upstream: backend\n    plugins:\n      - jwt:\n          keys: [{key}]\n          forward_claims: {{ sub: x-user-id }}\n"
        )
    };
    let routes = [
        route("env", "{ alg: HS256, secret_env: AVX_IT_JWT_SECRET }"),
        route("env64", "{ alg: HS256, secret_env: AVX_IT_JWT_SECRET_B64 }"),
        route(
            "inline",
            &format!("{{ alg: HS256, secret: \"{INLINE_RAW}\" }}"),
        ),
        route(
            "inline64",
            &format!("{{ alg: HS384, secret: \"{}\" }}", b64(&INLINE_BIN)),
        ),
    ]
    .concat();
    super::yaml(origin, &routes, "")
}

fn token(alg: Algorithm, secret: &[u8], sub: &str) -> String {
    sign(
        alg,
        None,
        &json!({ "sub": sub, "exp": now() + 3600 }),
        &EncodingKey::from_secret(secret),
    )
}

#[tokio::test]
async fn jwt_secrets_from_the_environment_and_inline_raw_or_base64_verify() {
    for var in ["AVX_IT_JWT_SECRET", "AVX_IT_JWT_SECRET_B64"] {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} must be set on the gateway only"
        );
    }
    let origin = RawOrigin::start().await;
    let env64 = b64(&ENV_BIN);
    let gw = GatewayProcess::start_with_env(
        &yaml(&origin),
        &[
            ("AVX_IT_JWT_SECRET", ENV_RAW),
            ("AVX_IT_JWT_SECRET_B64", &env64),
        ],
    );
    let c = client();
    let call = |path: &str, token: String| {
        let (c, url) = (c.clone(), gw.url(path));
        async move {
            fetch(
                &c,
                "GET",
                &url,
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
            .status
        }
    };

    for (path, alg, secret, sub) in [
        ("/env/a", Algorithm::HS256, ENV_RAW.as_bytes(), "env-user"),
        ("/env64/a", Algorithm::HS256, &ENV_BIN[..], "env64-user"),
        (
            "/inline/a",
            Algorithm::HS256,
            INLINE_RAW.as_bytes(),
            "inline-user",
        ),
        (
            "/inline64/a",
            Algorithm::HS384,
            &INLINE_BIN[..],
            "inline64-user",
        ),
    ] {
        assert_eq!(call(path, token(alg, secret, sub)).await, 200, "{path}");
        assert_eq!(
            origin
                .requests()
                .last()
                .and_then(|r| r.header("x-user-id").map(String::from))
                .as_deref(),
            Some(sub),
            "{path}: the verified token's claims went upstream"
        );
    }

    // The `base64:` strings themselves are not the secrets, and each route has its own.
    for (path, alg, secret) in [
        ("/env64/b", Algorithm::HS256, env64.as_bytes().to_vec()),
        (
            "/inline64/b",
            Algorithm::HS384,
            b64(&INLINE_BIN).into_bytes(),
        ),
        ("/env/b", Algorithm::HS256, INLINE_RAW.as_bytes().to_vec()),
        ("/inline/b", Algorithm::HS256, ENV_RAW.as_bytes().to_vec()),
    ] {
        assert_eq!(call(path, token(alg, &secret, "u")).await, 401, "{path}");
    }
    assert_eq!(origin.count(), 4, "{}", origin.describe());
}
