//! `jwt`: HS256, RS256, ES256 and EdDSA tokens made here; expired, not-yet-valid, wrong issuer
//! and audience, `alg: none` and algorithm confusion refused; a JWKS selected by `kid`.

use super::gateway;
use crate::harness::{client, fetch, RawOrigin, TestDir};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

const HS_SECRET: &[u8] = b"an hs256 test secret of 32 bytes+";
const RS_PRIVATE: &str = include_str!("../../fixtures/jwt/rs256-private.pem");
const RS_PUBLIC: &str = include_str!("../../fixtures/jwt/rs256-public.pem");

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims valid for an hour, for `iss`/`aud` of the test config.
fn claims(sub: &str) -> serde_json::Value {
    json!({ "sub": sub, "iss": "https://auth.test", "aud": "api", "exp": now() + 3600,
            "scope": "read write" })
}

pub(super) fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &serde_json::Value,
    key: &EncodingKey,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    encode(&h, claims, key).expect("sign")
}

struct Keys {
    dir: TestDir,
    ec: rcgen::KeyPair,
    ed: rcgen::KeyPair,
    jwks_a: rcgen::KeyPair,
    jwks_b: rcgen::KeyPair,
}

impl Keys {
    fn new() -> Keys {
        let gen = |alg| rcgen::KeyPair::generate_for(alg).expect("key pair");
        let keys = Keys {
            dir: TestDir::new(),
            ec: gen(&rcgen::PKCS_ECDSA_P256_SHA256),
            ed: gen(&rcgen::PKCS_ED25519),
            jwks_a: gen(&rcgen::PKCS_ECDSA_P256_SHA256),
            jwks_b: gen(&rcgen::PKCS_ECDSA_P256_SHA256),
        };
        keys.dir
            .write("hs.secret", std::str::from_utf8(HS_SECRET).expect("ascii"));
        keys.dir.write("rs.pem", RS_PUBLIC);
        keys.dir.write("ec.pem", &keys.ec.public_key_pem());
        keys.dir.write("ed.pem", &keys.ed.public_key_pem());
        let ec_jwk = |kid: &str, k: &rcgen::KeyPair| {
            // Uncompressed SEC1 point: 0x04 || X || Y.
            let raw = k.public_key_raw();
            json!({ "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                    "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]) })
        };
        // A shared-secret key in a published set is skipped, not fatal.
        let oct = json!({ "kty": "oct", "kid": "hm", "alg": "HS256",
                          "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0" });
        let jwks =
            json!({ "keys": [ec_jwk("key-a", &keys.jwks_a), oct, ec_jwk("key-b", &keys.jwks_b)] });
        keys.dir.write("jwks.json", &jwks.to_string());
        keys
    }

    fn path(&self, name: &str) -> String {
        self.dir.path(name).display().to_string()
    }

    fn ec_key(k: &rcgen::KeyPair) -> EncodingKey {
        EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).expect("ec key")
    }
}

fn routes(k: &Keys) -> String {
    format!(
        r#"
  - name: api
    match: {{ path_prefix: /api/ }}
    upstream: backend
    plugins:
      - jwt:
          keys:
            - {{ alg: HS256, secret_file: "{hs}" }}
            - {{ alg: RS256, public_key_file: "{rs}" }}
            - {{ alg: ES256, public_key_file: "{ec}" }}
            - {{ alg: EdDSA, public_key_file: "{ed}" }}
          issuer: https://auth.test
          audience: [api]
          leeway_seconds: 30
          from: [header:authorization, cookie:session, query:token]
          forward_claims: {{ sub: x-user-id, scope: x-scope }}
  - name: rs-only
    match: {{ path_prefix: /rs/ }}
    upstream: backend
    plugins:
      - jwt: {{ keys: [{{ alg: RS256, public_key_file: "{rs}" }}] }}
  - name: jwks
    match: {{ path_prefix: /jwks/ }}
    upstream: backend
    plugins:
      - jwt: {{ jwks_file: "{jwks}" }}
"#,
        hs = k.path("hs.secret"),
        rs = k.path("rs.pem"),
        ec = k.path("ec.pem"),
        ed = k.path("ed.pem"),
        jwks = k.path("jwks.json"),
    )
}

#[tokio::test]
async fn jwt_verifies_each_algorithm_and_refuses_bad_tokens() {
    let keys = Keys::new();
    let origin = RawOrigin::start().await;
    let gw = gateway(&origin, &routes(&keys), "");
    let c = client();
    let get = |path: &'static str, token: String| {
        let c = c.clone();
        let url = gw.url(path);
        async move {
            fetch(
                &c,
                "GET",
                &url,
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-user-id", "forged"),
                ],
            )
            .await
        }
    };

    let hs = EncodingKey::from_secret(HS_SECRET);
    let rs = EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).expect("rsa key");
    let ec = Keys::ec_key(&keys.ec);
    let ed = EncodingKey::from_ed_pem(keys.ed.serialize_pem().as_bytes()).expect("ed key");
    for (alg, key, sub) in [
        (Algorithm::HS256, &hs, "hs-user"),
        (Algorithm::RS256, &rs, "rs-user"),
        (Algorithm::ES256, &ec, "ec-user"),
        (Algorithm::EdDSA, &ed, "ed-user"),
    ] {
        let r = get("/api/x", sign(alg, None, &claims(sub), key)).await;
        assert_eq!(r.status, 200, "{alg:?}: {}", r.text());
    }
    let seen = origin.requests();
    let users: Vec<Vec<&str>> = seen.iter().map(|s| s.header_all("x-user-id")).collect();
    assert_eq!(
        users,
        [["hs-user"], ["rs-user"], ["ec-user"], ["ed-user"]],
        "the consumer claim is forwarded, the client's own value never"
    );
    assert_eq!(seen[0].header("x-scope"), Some("read write"));

    let mut expired = claims("u");
    expired["exp"] = json!(now() - 120);
    let mut early = claims("u");
    early["nbf"] = json!(now() + 600);
    let mut wrong_iss = claims("u");
    wrong_iss["iss"] = json!("https://evil.test");
    let mut wrong_aud = claims("u");
    wrong_aud["aud"] = json!("other");
    let mut no_exp = claims("u");
    no_exp.as_object_mut().expect("object").remove("exp");
    let mut no_iss = claims("u");
    no_iss.as_object_mut().expect("object").remove("iss");
    let mut no_aud = claims("u");
    no_aud.as_object_mut().expect("object").remove("aud");
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims("u").to_string().as_bytes())
    );
    // A character inside the signature, never the last one: the last base64url character
    // of a 32-byte MAC carries two padding bits, so changing it may decode to the same bytes.
    let mut tampered = sign(Algorithm::HS256, None, &claims("u"), &hs);
    let at = tampered.len() - 10;
    let was = tampered.as_bytes()[at];
    tampered.replace_range(at..=at, if was == b'A' { "B" } else { "A" });
    let wrong_secret = EncodingKey::from_secret(b"another secret that is 32 bytes long");
    for (why, token) in [
        ("expired", sign(Algorithm::HS256, None, &expired, &hs)),
        ("not yet valid", sign(Algorithm::HS256, None, &early, &hs)),
        (
            "wrong issuer",
            sign(Algorithm::ES256, None, &wrong_iss, &ec),
        ),
        (
            "wrong audience",
            sign(Algorithm::RS256, None, &wrong_aud, &rs),
        ),
        ("no exp", sign(Algorithm::HS256, None, &no_exp, &hs)),
        (
            "no iss where an issuer is configured",
            sign(Algorithm::HS256, None, &no_iss, &hs),
        ),
        (
            "no aud where an audience is configured",
            sign(Algorithm::ES256, None, &no_aud, &ec),
        ),
        ("alg none", none),
        ("tampered signature", tampered),
        (
            "wrong secret",
            sign(Algorithm::HS256, None, &claims("u"), &wrong_secret),
        ),
        ("not a JWT", "abc.def".to_string()),
    ] {
        let r = get("/api/x", token).await;
        assert_eq!(r.status, 401, "{why}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\""),
            "{why}"
        );
    }
    let r = fetch(&c, "GET", &gw.url("/api/x"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"api\""));

    // Algorithm confusion: an HS256 token whose HMAC key is the RSA public key.
    let confused = sign(
        Algorithm::HS256,
        None,
        &claims("u"),
        &EncodingKey::from_secret(RS_PUBLIC.as_bytes()),
    );
    assert_eq!(
        get("/rs/x", confused).await.status,
        401,
        "HS256 with the RSA public key"
    );
    assert_eq!(
        get("/rs/x", sign(Algorithm::RS256, None, &claims("u"), &rs))
            .await
            .status,
        200
    );

    // The cookie source.
    let cookie = format!(
        "other=1; session={}",
        sign(Algorithm::HS256, None, &claims("cookie-user"), &hs)
    );
    let r = fetch(&c, "GET", &gw.url("/api/c"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        origin.requests().last().expect("seen").header("x-user-id"),
        Some("cookie-user")
    );

    // The query source: the token is removed from the URL before proxying (and logging).
    let t = sign(Algorithm::HS256, None, &claims("query-user"), &hs);
    let r = fetch(&c, "GET", &gw.url(&format!("/api/q?a=1&token={t}")), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(origin.requests().last().expect("seen").target, "/api/q?a=1");

    // A JWKS with two keys, chosen by kid.
    let b = Keys::ec_key(&keys.jwks_b);
    let a = Keys::ec_key(&keys.jwks_a);
    assert_eq!(
        get(
            "/jwks/x",
            sign(Algorithm::ES256, Some("key-b"), &claims("u"), &b)
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            "/jwks/x",
            sign(Algorithm::ES256, Some("key-a"), &claims("u"), &a)
        )
        .await
        .status,
        200
    );
    assert_eq!(
        get(
            "/jwks/x",
            sign(Algorithm::ES256, Some("key-a"), &claims("u"), &b)
        )
        .await
        .status,
        401,
        "key b's signature under kid key-a"
    );
    assert_eq!(
        get(
            "/jwks/x",
            sign(Algorithm::ES256, Some("key-c"), &claims("u"), &b)
        )
        .await
        .status,
        401,
        "an unknown kid"
    );
    let before = origin.count();
    assert_eq!(
        before,
        4 + 1 + 1 + 1 + 2,
        "only verified requests reached the origin"
    );
}

#[tokio::test]
async fn a_jwks_url_is_fetched_refreshed_and_its_last_good_set_kept() {
    let keys = Keys::new();
    let ec_jwk = |kid: &str, k: &rcgen::KeyPair| {
        let raw = k.public_key_raw();
        json!({ "kty": "EC", "crv": "P-256", "kid": kid,
                "x": b64url(&raw[1..33]), "y": b64url(&raw[33..65]) })
    };
    let set = |jwks: serde_json::Value| {
        crate::harness::OriginReply::new(200, jwks.to_string())
            .header("content-type", "application/json")
    };
    let idp = RawOrigin::start().await;
    idp.reply_for("/jwks", set(json!({ "keys": [ec_jwk("a", &keys.jwks_a)] })));
    let origin = RawOrigin::start().await;
    let api_route = format!(
        "  - name: api\n    match: {{ path_prefix: / }}\n    upstream: backend\n    plugins:\n      - jwt: {{ jwks_url: \"http://{}/jwks\", refresh_seconds: 1 }}\n",
        idp.addr
    );
    let gw = gateway(&origin, &api_route, "");
    let c = client();
    let with = |token: String| {
        let (c, url) = (c.clone(), gw.url("/x"));
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
    let a = Keys::ec_key(&keys.jwks_a);
    let b = Keys::ec_key(&keys.jwks_b);
    let token_a = sign(Algorithm::ES256, Some("a"), &claims("u"), &a);
    let token_b = sign(Algorithm::ES256, Some("b"), &claims("u"), &b);
    assert_eq!(
        with(token_a.clone()).await,
        200,
        "the first request waits for the first fetch"
    );
    assert_eq!(with(token_b.clone()).await, 401);

    // The identity provider rotates to key b: after a refresh, b verifies and a no longer does.
    idp.reply_for("/jwks", set(json!({ "keys": [ec_jwk("b", &keys.jwks_b)] })));
    let rotated = crate::harness::wait_until(std::time::Duration::from_secs(10), || {
        let t = token_b.clone();
        let w = &with;
        async move { w(t).await == 200 }
    })
    .await;
    assert!(rotated, "the refreshed set was never used");
    assert_eq!(with(token_a.clone()).await, 401);

    // A failing provider: the last good set stays.
    idp.reply_for("/jwks", crate::harness::OriginReply::new(500, "down"));
    let fetched = idp.count();
    assert!(
        idp.wait_for_count(fetched + 2, std::time::Duration::from_secs(10))
            .await
    );
    assert_eq!(
        with(token_b.clone()).await,
        200,
        "the last good set is kept"
    );

    // A reload that keeps the plugin's jwks_url takes the fetched set over: with the provider
    // still down, tokens verify right after it.
    let extra = "  - { name: other, match: { path: /other }, respond: { status: 200 } }\n";
    gw.rewrite_config(&super::yaml(&origin, &format!("{extra}{api_route}"), ""));
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(
        with(token_b).await,
        200,
        "the reloaded plugin still has the last good set"
    );
}
