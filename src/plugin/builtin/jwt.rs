//! `jwt`: verifies JSON Web Tokens (RFC 7519) with the `jsonwebtoken` crate, against keys that
//! each fix their algorithm, so a token cannot choose how it is checked (no `alg: none`, no
//! HMAC with a public key).

use super::key_auth::{credential, strip_credential};
use super::subrequest::{send, Endpoint};
use crate::config::{deserialize_via_try_from, ConfigError, CredentialSource, HeaderNameConf};
use crate::plugin::{Consumer, Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora_core::connectors::http::Connector;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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
    /// A JWKS URL, fetched in the background every `refresh_seconds`; the last good set is
    /// kept when a fetch fails.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often `jwks_url` is fetched again.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
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

fn default_refresh() -> u64 {
    300
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

/// A JWKS fetched from a URL: the current set, swapped whole by a background task.
struct RemoteJwks {
    endpoint: Endpoint,
    refresh: Duration,
    keys: ArcSwap<Vec<Key>>,
    connector: Connector,
    /// Started on the first request, on the worker's runtime: Pingora forks and starts its
    /// runtimes after the config is compiled, so nothing can be spawned at load.
    started: std::sync::Once,
    loaded: AtomicBool,
    /// A first fetch finished (well or not): requests no longer wait for one.
    attempted: AtomicBool,
    first_load: Notify,
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long a request waits for the first JWKS fetch.
const FIRST_FETCH_WAIT: Duration = Duration::from_secs(3);

/// The remote key sets alive in this process, by URL and refresh interval: a plugin built by
/// a reload takes over the set (and refresher) of the one it replaces instead of starting
/// empty, so its first requests neither wait for a fetch nor fail while the provider is down.
/// Only taken while a config is compiled.
static REMOTE_SETS: std::sync::Mutex<Vec<(String, Duration, std::sync::Weak<RemoteJwks>)>> =
    std::sync::Mutex::new(Vec::new());

impl RemoteJwks {
    /// The live set for `url` and `refresh`, or a new one made by `make`.
    fn shared(url: &str, refresh: Duration, make: impl FnOnce() -> RemoteJwks) -> Arc<RemoteJwks> {
        let mut sets = REMOTE_SETS.lock().unwrap_or_else(|p| p.into_inner());
        sets.retain(|(_, _, weak)| weak.strong_count() > 0);
        let live = sets
            .iter()
            .find(|(u, r, _)| u == url && *r == refresh)
            .and_then(|(_, _, weak)| weak.upgrade());
        live.unwrap_or_else(|| {
            let set = Arc::new(make());
            sets.push((url.to_string(), refresh, Arc::downgrade(&set)));
            set
        })
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let req = self.endpoint.get().map_err(|e| e.to_string())?;
        let io = send(&self.connector, &self.endpoint, req, MAX_JWKS_BYTES);
        let answer = tokio::time::timeout(FIRST_FETCH_WAIT, io)
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !answer.header.status.is_success() {
            return Err(format!("status {}", answer.header.status));
        }
        let body = answer.body.ok_or("larger than 1 MiB")?;
        parse_jwks(&body)
    }

    /// Refreshes until the plugin is dropped (a reload replaced it): the loop holds it only
    /// weakly between fetches, so a replaced plugin stops fetching.
    async fn refresh_forever(me: std::sync::Weak<Self>) {
        // Until the first set loads, retry soon (1 s, doubling up to `refresh`).
        let mut retry = Duration::from_secs(1);
        loop {
            let Some(this) = me.upgrade() else {
                return;
            };
            retry = retry.min(this.refresh);
            let wait = match this.fetch().await {
                Ok(keys) => {
                    this.keys.store(Arc::new(keys));
                    this.loaded.store(true, Ordering::Release);
                    this.refresh
                }
                Err(e) => {
                    log::warn!("jwt: fetching the JWKS failed ({e}); keeping the last good set");
                    if this.loaded.load(Ordering::Acquire) {
                        this.refresh
                    } else {
                        let now = retry;
                        retry = (retry * 2).min(this.refresh);
                        now
                    }
                }
            };
            // Requests waiting for the first attempt go on, with whatever set there is.
            this.attempted.store(true, Ordering::Release);
            this.first_load.notify_waiters();
            drop(this);
            tokio::time::sleep(wait).await;
        }
    }

    /// Starts the refresher once; the first requests wait (bounded) for its first fetch.
    async fn ready(self: &Arc<Self>) {
        if self.attempted.load(Ordering::Acquire) {
            return;
        }
        let me = Arc::downgrade(self);
        self.started.call_once(|| {
            tokio::spawn(Self::refresh_forever(me));
        });
        // Registered before `loaded` is read again, so a load in between is not missed.
        let mut notified = std::pin::pin!(self.first_load.notified());
        notified.as_mut().enable();
        if !self.attempted.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(FIRST_FETCH_WAIT, notified).await;
        }
    }
}

/// The compiled `jwt`.
pub struct Jwt {
    keys: Vec<Key>,
    remote: Option<Arc<RemoteJwks>>,
    /// The claims checks, once per algorithm (each allowing only its own), so a request
    /// never clones one.
    validations: Vec<(Algorithm, Validation)>,
    from: Vec<CredentialSource>,
    consumer_claim: String,
    forward: Vec<(String, HeaderName)>,
    challenge: HeaderValue,
    invalid: HeaderValue,
}

/// Every algorithm a key may have (static keys and JWKS keys alike).
const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

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
            let text = std::fs::read(path)
                .map_err(|e| cx.error("jwks_file", format!("cannot read {path}: {e}")))?;
            keys.extend(
                parse_jwks(&text).map_err(|m| cx.error("jwks_file", format!("{path}: {m}")))?,
            );
        }
        let remote = match &c.jwks_url {
            Some(url) => {
                if c.refresh_seconds == 0 {
                    return Err(cx.error("refresh_seconds", "must be > 0"));
                }
                let endpoint =
                    Endpoint::parse(url, FIRST_FETCH_WAIT).map_err(|m| cx.error("jwks_url", m))?;
                let refresh = Duration::from_secs(c.refresh_seconds);
                Some(RemoteJwks::shared(url, refresh, || RemoteJwks {
                    endpoint,
                    refresh,
                    keys: ArcSwap::from_pointee(Vec::new()),
                    connector: Connector::new(None),
                    started: std::sync::Once::new(),
                    loaded: AtomicBool::new(false),
                    attempted: AtomicBool::new(false),
                    first_load: Notify::new(),
                }))
            }
            None => None,
        };
        if keys.is_empty() && remote.is_none() {
            return Err(cx.error("", "needs keys, a jwks_file or a jwks_url"));
        }
        if c.from.is_empty() {
            return Err(cx.error("from", "needs at least one source"));
        }
        // The claims checks, the same for every key; the algorithm is enforced per key.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = c.leeway_seconds;
        validation.validate_nbf = true;
        validation.validate_aud = !c.audience.is_empty();
        if !c.audience.is_empty() {
            validation.set_audience(&c.audience);
        }
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        // jsonwebtoken checks iss and aud only when the token has them: a configured check
        // must also require the claim.
        let mut required = vec!["exp"];
        if c.issuer.is_some() {
            required.push("iss");
        }
        if !c.audience.is_empty() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
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
            remote,
            validations: ALGORITHMS
                .iter()
                .map(|&alg| {
                    let mut v = validation.clone();
                    v.algorithms = vec![alg];
                    (alg, v)
                })
                .collect(),
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
        let remote = self.remote.as_ref().map(|r| r.keys.load());
        self.keys
            .iter()
            .chain(remote.iter().flat_map(|set| set.iter()))
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&k.kid, &header.kid) {
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
                (None, _) => true,
            })
            .find_map(|k| {
                let (_, v) = self.validations.iter().find(|(a, _)| *a == k.alg)?;
                jsonwebtoken::decode(token, &k.key, v)
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

/// The keys of a JWK Set (RFC 7517). Every key needs a usable algorithm; shared secrets are
/// refused (a key set may be published).
fn parse_jwks(text: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
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
            // Common sets (Entra ID's, for one) publish RSA signing keys without "alg";
            // RS256 is what they sign with, and the token's own alg must still match.
            (None, AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
            _ => None,
        };
        let name = kid.as_deref().unwrap_or("no kid");
        let for_signing = !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption));
        // A published set often holds keys this gateway cannot use (encryption keys, RSA keys
        // without "alg"): they are skipped, and only a set with no usable key is refused.
        let usable = alg.filter(|a| for_signing && !is_hmac(*a)).and_then(|alg| {
            DecodingKey::from_jwk(jwk).ok().map(|key| Key {
                alg,
                kid: kid.clone(),
                key,
            })
        });
        match usable {
            Some(k) => keys.push(k),
            None => log::warn!(
                "jwt: JWKS key {i} ({name}) skipped: not a signing key with a usable \"alg\" \
                 (HMAC keys are never taken from a JWKS)"
            ),
        }
    }
    if keys.is_empty() {
        return Err("no usable signing key in the set".into());
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
        let Some((src, token)) = credential(req, &self.from) else {
            return Flow::Reply(Reply::unauthorized(self.challenge.clone()));
        };
        if let Some(remote) = &self.remote {
            remote.ready().await;
        }
        if matches!(self.from[src], CredentialSource::Query(_)) {
            // A token in the URL would otherwise be forwarded, cached in the key, and logged
            // with the path; headers and cookies are never logged.
            strip_credential(req, &self.from[src]);
        }
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
