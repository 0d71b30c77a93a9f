//! `jwt`: verifies JSON Web Tokens (RFC 7519) with the `jsonwebtoken` crate, against keys that
//! each fix their algorithm, so a token cannot choose how it is checked (no `alg: none`, no
//! HMAC with a public key).

use super::key_auth::credential;
use crate::config::{deserialize_via_try_from, ConfigError, CredentialSource, HeaderNameConf};
use crate::plugin::{Consumer, Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use async_trait::async_trait;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A JWS algorithm as written in the config (`HS256`, `RS256`, `ES256`, `EdDSA`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlgConf(pub Algorithm);

impl TryFrom<String> for AlgConf {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse::<Algorithm>().map(AlgConf).map_err(|_| {
            format!(
                "unknown algorithm {s:?} (HS256, HS384, HS512, RS256, RS384, RS512, PS256, \
                 PS384, PS512, ES256, ES384, EdDSA)"
            )
        })
    }
}

deserialize_via_try_from!(AlgConf, "a JWS algorithm such as RS256");

/// The YAML of `jwt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Keys a token may verify with; any one that verifies admits it.
    #[serde(default)]
    pub keys: Vec<JwtKeyConfig>,
    /// A JWKS file (RFC 7517); its keys are selected by the token's `kid`.
    #[serde(default)]
    pub jwks_file: Option<String>,
    /// The required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values, when set (one must match).
    #[serde(default)]
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Where the token is read from; the first source present wins (`Bearer ` is stripped).
    #[serde(default = "default_from")]
    pub from: Vec<CredentialSource>,
    /// The claim that names the consumer.
    #[serde(default = "default_consumer_claim")]
    pub consumer_claim: String,
    /// Claims forwarded upstream as headers (`claim: header`); the client's own values of
    /// these headers are always removed.
    #[serde(default)]
    pub forward_claims: BTreeMap<String, HeaderNameConf>,
    /// The `realm` of the `WWW-Authenticate: Bearer` challenge.
    #[serde(default)]
    pub realm: Option<String>,
}

/// One `jwt.keys[]` entry: an algorithm and the key it verifies with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// The only algorithm this key accepts.
    pub alg: AlgConf,
    /// Only tokens with this `kid` (or none) use this key.
    #[serde(default)]
    pub kid: Option<String>,
    /// HMAC secret, raw bytes or `base64:...` (prefer `secret_env` or `secret_file`).
    #[serde(default)]
    pub secret: Option<String>,
    /// Environment variable holding the HMAC secret (raw or `base64:...`).
    #[serde(default)]
    pub secret_env: Option<String>,
    /// File holding the HMAC secret: its exact bytes, or `base64:...`.
    #[serde(default)]
    pub secret_file: Option<String>,
    /// PEM file with the public key (RSA, EC or Ed25519; SPKI or PKCS#1).
    #[serde(default)]
    pub public_key_file: Option<String>,
}

fn default_leeway() -> u64 {
    30
}

fn default_from() -> Vec<CredentialSource> {
    vec![CredentialSource::Header(http::header::AUTHORIZATION)]
}

fn default_consumer_claim() -> String {
    "sub".into()
}

struct Key {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The compiled `jwt`.
pub struct Jwt {
    keys: Vec<Key>,
    validation: Validation,
    from: Vec<CredentialSource>,
    consumer_claim: String,
    forward: Vec<(String, HeaderName)>,
    challenge: HeaderValue,
    invalid: HeaderValue,
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// A secret string: its bytes, or the decoded bytes after `base64:`.
fn secret_bytes(s: &[u8]) -> Result<Vec<u8>, String> {
    match s.strip_prefix(b"base64:") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim_ascii())
            .map_err(|e| format!("invalid base64: {e}")),
        None => Ok(s.to_vec()),
    }
}

impl Jwt {
    /// Reads every key once; a key that cannot be used is an error at its entry.
    pub fn build(c: &JwtConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for (i, k) in c.keys.iter().enumerate() {
            keys.push(static_key(k, &format!("keys[{i}]"), cx)?);
        }
        if let Some(path) = &c.jwks_file {
            keys.extend(jwks_keys(path, cx)?);
        }
        if keys.is_empty() {
            return Err(cx.error("", "needs keys or a jwks_file"));
        }
        if c.from.is_empty() {
            return Err(cx.error("from", "needs at least one source"));
        }
        // One validation for every key: the algorithm is enforced per key before decoding.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = keys.iter().map(|k| k.alg).collect();
        validation.leeway = c.leeway_seconds;
        validation.validate_nbf = true;
        validation.validate_aud = !c.audience.is_empty();
        if !c.audience.is_empty() {
            validation.set_audience(&c.audience);
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        let realm = c.realm.as_deref().unwrap_or("api");
        if realm.contains(['"', '\\']) {
            return Err(cx.error("realm", "must not contain quotes or backslashes"));
        }
        let challenge = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\""))
            .map_err(|_| cx.error("realm", "not a valid header value"))?;
        let invalid = HeaderValue::from_str(&format!(
            "Bearer realm=\"{realm}\", error=\"invalid_token\""
        ))
        .map_err(|_| cx.error("realm", "not a valid header value"))?;
        Ok(Jwt {
            keys,
            validation,
            from: c.from.clone(),
            consumer_claim: c.consumer_claim.clone(),
            forward: c
                .forward_claims
                .iter()
                .map(|(claim, h)| (claim.clone(), h.0.clone()))
                .collect(),
            challenge,
            invalid,
        })
    }

    /// The verified claims of a token, or `None`.
    pub fn verify(&self, token: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        self.keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .find_map(|k| {
                let mut v = self.validation.clone();
                v.algorithms = vec![k.alg];
                jsonwebtoken::decode(token, &k.key, &v)
                    .ok()
                    .map(|d| d.claims)
            })
    }
}

fn static_key(k: &JwtKeyConfig, at: &str, cx: &PluginContext<'_>) -> Result<Key, ConfigError> {
    let alg = k.alg.0;
    let err = |key: &str, m: String| cx.error(&format!("{at}{key}"), m);
    let sources = [
        k.secret.is_some(),
        k.secret_env.is_some(),
        k.secret_file.is_some(),
        k.public_key_file.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(err(
            "",
            "needs exactly one of secret, secret_env, secret_file and public_key_file".into(),
        ));
    }
    let key = if is_hmac(alg) {
        let raw = if let Some(s) = &k.secret {
            secret_bytes(s.as_bytes()).map_err(|m| err(".secret", m))?
        } else if let Some(var) = &k.secret_env {
            let v = std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    err(
                        ".secret_env",
                        format!("environment variable {var} is unset or empty"),
                    )
                })?;
            secret_bytes(v.as_bytes()).map_err(|m| err(".secret_env", m))?
        } else if let Some(path) = &k.secret_file {
            let v = std::fs::read(path)
                .map_err(|e| err(".secret_file", format!("cannot read {path}: {e}")))?;
            secret_bytes(&v).map_err(|m| err(".secret_file", m))?
        } else {
            return Err(err(
                ".public_key_file",
                format!("{alg:?} is an HMAC algorithm: give a secret"),
            ));
        };
        // RFC 7518 §3.2: an HMAC key at least as long as the hash output.
        let min = match alg {
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => 32,
        };
        if raw.len() < min {
            return Err(err(
                "",
                format!(
                    "the {alg:?} secret has {} bytes; RFC 7518 requires at least {min}",
                    raw.len()
                ),
            ));
        }
        DecodingKey::from_secret(&raw)
    } else {
        let Some(path) = &k.public_key_file else {
            return Err(err(
                "",
                format!("{alg:?} verifies with a public key: give public_key_file"),
            ));
        };
        let pem = std::fs::read(path)
            .map_err(|e| err(".public_key_file", format!("cannot read {path}: {e}")))?;
        let parsed = match alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => DecodingKey::from_rsa_pem(&pem),
        };
        parsed.map_err(|e| {
            err(
                ".public_key_file",
                format!("not a {alg:?} public key in PEM: {e}"),
            )
        })?
    };
    Ok(Key {
        alg,
        kid: k.kid.clone(),
        key,
    })
}

fn jwks_keys(path: &str, cx: &PluginContext<'_>) -> Result<Vec<Key>, ConfigError> {
    let err = |m: String| cx.error("jwks_file", m);
    let text = std::fs::read(path).map_err(|e| err(format!("cannot read {path}: {e}")))?;
    let set: JwkSet =
        serde_json::from_slice(&text).map_err(|e| err(format!("{path} is not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(a), _) => a.to_string().parse::<Algorithm>().ok(),
            (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
                EllipticCurve::P256 => Some(Algorithm::ES256),
                EllipticCurve::P384 => Some(Algorithm::ES384),
                _ => None,
            },
            (None, AlgorithmParameters::OctetKeyPair(_)) => Some(Algorithm::EdDSA),
            _ => None,
        };
        let Some(alg) = alg else {
            return Err(err(format!(
                "key {i} ({}) has no usable \"alg\"",
                kid.as_deref().unwrap_or("no kid")
            )));
        };
        if is_hmac(alg) {
            // Shared secrets do not belong in a key set that may be published.
            return Err(err(format!(
                "key {i}: HMAC keys are not accepted from a JWKS"
            )));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| err(format!("key {i}: {e}")))?;
        keys.push(Key { alg, kid, key });
    }
    Ok(keys)
}

fn claim_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        serde_json::Value::Array(items) => Some(
            items
                .iter()
                .filter_map(claim_text)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl Plugin for Jwt {
    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        // The client's own values of forwarded-claim headers never reach the upstream.
        for (_, h) in &self.forward {
            req.remove_header(h);
        }
        let Some((_, token)) = credential(req, &self.from) else {
            return Flow::Reply(Reply::unauthorized(self.challenge.clone()));
        };
        let Some(claims) = self.verify(&token) else {
            return Flow::Reply(Reply::unauthorized(self.invalid.clone()));
        };
        if let Some(name) = claims.get(&self.consumer_claim).and_then(claim_text) {
            req.set_consumer(Consumer::external(&name));
        }
        for (claim, h) in &self.forward {
            if let Some(v) = claims
                .get(claim)
                .and_then(claim_text)
                .and_then(|t| HeaderValue::from_str(&t).ok())
            {
                req.set_header(h.clone(), v);
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_raw_or_base64() {
        assert_eq!(secret_bytes(b"abc").expect("raw"), b"abc");
        assert_eq!(secret_bytes(b"base64:YWJj\n").expect("b64"), b"abc");
        assert!(secret_bytes(b"base64:!!").is_err());
    }

    #[test]
    fn algorithms_parse_with_a_message() {
        assert_eq!(
            AlgConf::try_from("ES256".to_string()).expect("ok").0,
            Algorithm::ES256
        );
        let e = AlgConf::try_from("HS257".to_string()).expect_err("unknown");
        assert!(e.starts_with("unknown algorithm \"HS257\""), "{e}");
        assert!(AlgConf::try_from("none".to_string()).is_err());
    }
}
