//! `key_auth`: API keys from a header, query parameter or cookie, checked against consumers
//! whose keys are stored only as SHA-256 digests.

use super::digest::Digest;
use crate::config::{ConfigError, CredentialSource};
use crate::plugin::{Consumer, Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use async_trait::async_trait;
use http::HeaderValue;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

/// The YAML of `key_auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Where the key is read from; the first source present wins.
    #[serde(default = "default_from")]
    pub from: Vec<CredentialSource>,
    /// Who may call, each with one key.
    pub consumers: Vec<KeyConsumer>,
    /// Remove the key from the request before proxying.
    #[serde(default = "yes")]
    pub strip: bool,
}

/// One `key_auth` consumer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConsumer {
    /// The consumer name (a metric label and the `$consumer` variable).
    pub name: String,
    /// The key's SHA-256 digest, in hex (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// An environment variable holding the key itself, read at load.
    #[serde(default)]
    pub key_env: Option<String>,
}

fn default_from() -> Vec<CredentialSource> {
    vec![CredentialSource::Header(http::HeaderName::from_static(
        "x-api-key",
    ))]
}

fn yes() -> bool {
    true
}

/// The compiled `key_auth`.
pub struct KeyAuth {
    from: Vec<CredentialSource>,
    // Looked up by digest, compared in constant time: the keys themselves are never held.
    consumers: HashMap<Digest, Arc<str>>,
    strip: bool,
}

impl KeyAuth {
    /// Reads the digests (and `key_env` keys) once.
    pub fn build(c: &KeyAuthConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        if c.from.is_empty() {
            return Err(cx.error("from", "needs at least one source"));
        }
        if c.consumers.is_empty() {
            return Err(cx.error("consumers", "needs at least one consumer"));
        }
        let mut consumers = HashMap::with_capacity(c.consumers.len());
        for (i, k) in c.consumers.iter().enumerate() {
            let at = |key: &str| format!("consumers[{i}]{key}");
            if k.name.is_empty() || HeaderValue::from_str(&k.name).is_err() {
                return Err(cx.error(&at(".name"), "needs a printable name"));
            }
            let digest = match (&k.key_sha256, &k.key_env) {
                (Some(hex), None) => Digest::from_hex(hex).ok_or_else(|| {
                    cx.error(
                        &at(".key_sha256"),
                        "expected 64 hex digits (a SHA-256 digest)",
                    )
                })?,
                (None, Some(var)) => match std::env::var(var) {
                    Ok(key) if !key.is_empty() => Digest::of(&[key.as_bytes()]),
                    _ => {
                        return Err(cx.error(
                            &at(".key_env"),
                            format!("environment variable {var} is unset or empty"),
                        ))
                    }
                },
                _ => return Err(cx.error(&at(""), "needs exactly one of key_sha256 and key_env")),
            };
            if consumers
                .insert(digest, Arc::from(k.name.as_str()))
                .is_some()
            {
                return Err(cx.error(&at(""), "two consumers have the same key"));
            }
        }
        Ok(KeyAuth {
            from: c.from.clone(),
            consumers,
            strip: c.strip,
        })
    }

    /// The consumer a presented key belongs to.
    pub fn lookup(&self, key: &[u8]) -> Option<&Arc<str>> {
        self.consumers.get(&Digest::of(&[key]))
    }
}

/// The credential a request presents, from the first source that has one.
pub(crate) fn credential(
    req: &RequestView<'_>,
    from: &[CredentialSource],
) -> Option<(usize, String)> {
    from.iter().enumerate().find_map(|(i, src)| {
        let v = match src {
            CredentialSource::Header(h) => {
                let v = req.header(h)?.to_str().ok()?;
                let v = v.trim();
                match v.get(..7) {
                    Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim().to_string(),
                    _ => v.to_string(),
                }
            }
            CredentialSource::Query(q) => req.query_param(q)?,
            CredentialSource::Cookie(c) => req.cookie(c)?.to_string(),
        };
        (!v.is_empty()).then_some((i, v))
    })
}

/// Removes a credential from where it was found, so the backend never sees it.
pub(crate) fn strip_credential(req: &mut RequestView<'_>, src: &CredentialSource) {
    match src {
        CredentialSource::Header(h) => req.remove_header(h),
        CredentialSource::Query(q) => {
            // The path and query were valid before; dropping a parameter keeps them valid.
            let _ = req.remove_query_param(q);
        }
        // Cookies are left alone: other cookies in the same field belong to the application.
        CredentialSource::Cookie(_) => {}
    }
}

#[async_trait]
impl Plugin for KeyAuth {
    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        let challenge = || Reply::unauthorized(HeaderValue::from_static("ApiKey"));
        let Some((src, key)) = credential(req, &self.from) else {
            return Flow::Reply(challenge());
        };
        let Some(name) = self.lookup(key.as_bytes()).cloned() else {
            if matches!(self.from[src], CredentialSource::Query(_)) {
                // Not left in the logged path, valid or not.
                strip_credential(req, &self.from[src]);
            }
            return Flow::Reply(challenge());
        };
        req.set_consumer(Consumer::configured(name));
        if self.strip {
            strip_credential(req, &self.from[src]);
        }
        Flow::Continue
    }
}
