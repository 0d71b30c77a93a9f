//! `basic_auth`: HTTP Basic authentication (RFC 7617) against htpasswd-style hashes, bcrypt
//! (`$2y$`, `$2b$`, `$2a$`) or SHA-crypt (`$5$`, `$6$`), checked by the `bcrypt` and
//! `sha-crypt` crates.
//!
//! A hash check costs milliseconds of CPU by design, so it never runs on a proxy worker: it
//! runs on Tokio's blocking pool, at most [`MAX_CONCURRENT_CHECKS`] at once, and a credential
//! that verified is remembered (by its SHA-256 digest, never in clear) for [`CACHE_TTL`].

use super::digest::Digest;
use crate::config::ConfigError;
use crate::plugin::{Consumer, Flow, Phase, Plugin, PluginContext, Reply, ReplyKind, RequestView};
use async_trait::async_trait;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Hash checks running at once, per plugin instance.
pub const MAX_CONCURRENT_CHECKS: usize = 4;
/// How long a request waits for a check slot before it is answered 503.
pub const CHECK_WAIT: Duration = Duration::from_secs(2);
/// How long a verified credential is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most credentials remembered (the cache is emptied when it is full).
pub const CACHE_MAX: usize = 10_000;

/// The YAML of `basic_auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The realm of the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
    /// An htpasswd file: `user:hash` lines.
    #[serde(default)]
    pub htpasswd_file: Option<String>,
    /// Users and their hashes, inline.
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Remove `Authorization` before proxying, so backends never see the password.
    #[serde(default = "yes")]
    pub strip: bool,
}

fn default_realm() -> String {
    "api".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone)]
enum Hash {
    Bcrypt(String),
    Sha256Crypt(String),
    Sha512Crypt(String),
}

impl Hash {
    fn parse(h: &str) -> Option<Hash> {
        let h = h.trim();
        if ["$2y$", "$2b$", "$2a$"].iter().any(|p| h.starts_with(p)) {
            // Checked now, so a broken line fails at load rather than at the first request.
            bcrypt::verify("", h).ok()?;
            Some(Hash::Bcrypt(h.to_string()))
        } else if h.starts_with("$5$") {
            Some(Hash::Sha256Crypt(h.to_string()))
        } else if h.starts_with("$6$") {
            Some(Hash::Sha512Crypt(h.to_string()))
        } else {
            None
        }
    }

    /// Whether `password` matches (constant-time inside both crates).
    fn check(&self, password: &str) -> bool {
        match self {
            Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
            Hash::Sha256Crypt(h) => sha_crypt::sha256_check(password, h).is_ok(),
            Hash::Sha512Crypt(h) => sha_crypt::sha512_check(password, h).is_ok(),
        }
    }
}

/// Verified credentials by digest, in shards so concurrent requests rarely share a lock.
struct Verified {
    shards: Box<[Mutex<HashMap<Digest, Instant>>]>,
}

impl Verified {
    fn new() -> Self {
        Verified {
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, d: &Digest) -> &Mutex<HashMap<Digest, Instant>> {
        &self.shards[usize::from(d.first_byte()) % self.shards.len()]
    }

    fn contains(&self, d: &Digest) -> bool {
        let Ok(map) = self.shard(d).lock() else {
            return false;
        };
        map.get(d).is_some_and(|t| t.elapsed() < CACHE_TTL)
    }

    fn insert(&self, d: Digest) {
        if let Ok(mut map) = self.shard(&d).lock() {
            if map.len() >= CACHE_MAX / self.shards.len() {
                map.clear();
            }
            map.insert(d, Instant::now());
        }
    }
}

/// The compiled `basic_auth`.
pub struct BasicAuth {
    users: HashMap<String, (Arc<str>, Hash)>,
    /// Checked for unknown users, so that timing does not tell which users exist.
    decoy: Hash,
    challenge: HeaderValue,
    strip: bool,
    verified: Arc<Verified>,
    slots: Arc<Semaphore>,
}

impl BasicAuth {
    /// Reads and checks every hash once.
    pub fn build(c: &BasicAuthConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        let mut users = HashMap::new();
        let mut add = |user: &str, hash: &str, key: &str, what: String| {
            if user.is_empty() || user.contains(':') {
                return Err(cx.error(key, format!("{what}: invalid user name {user:?}")));
            }
            let h = Hash::parse(hash).ok_or_else(|| {
                cx.error(
                    key,
                    format!(
                        "{what}: unsupported or malformed hash for user {user:?} (use bcrypt \
                         $2y$/$2b$ or SHA-crypt $5$/$6$)"
                    ),
                )
            })?;
            if users
                .insert(user.to_string(), (Arc::from(user), h))
                .is_some()
            {
                return Err(cx.error(key, format!("{what}: user {user:?} appears twice")));
            }
            Ok(())
        };
        for (user, hash) in &c.users {
            add(user, hash, &format!("users.{user}"), "users".into())?;
        }
        if let Some(path) = &c.htpasswd_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| cx.error("htpasswd_file", format!("cannot read {path}: {e}")))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((user, hash)) = line.split_once(':') else {
                    return Err(cx.error(
                        "htpasswd_file",
                        format!("{path} line {}: expected user:hash", n + 1),
                    ));
                };
                add(
                    user,
                    hash,
                    "htpasswd_file",
                    format!("{path} line {}", n + 1),
                )?;
            }
        }
        if users.is_empty() {
            return Err(cx.error("", "needs users or an htpasswd_file with at least one user"));
        }
        if c.realm.contains(['"', '\\']) {
            return Err(cx.error("realm", "must not contain quotes or backslashes"));
        }
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm))
                .map_err(|_| cx.error("realm", "not a valid header value"))?;
        // The decoy has the cost of a typical entry: the first bcrypt one, else the first.
        let decoy = users
            .values()
            .map(|(_, h)| h)
            .find(|h| matches!(h, Hash::Bcrypt(_)))
            .or_else(|| users.values().map(|(_, h)| h).next())
            .cloned()
            .ok_or_else(|| cx.error("", "no users"))?;
        Ok(BasicAuth {
            users,
            decoy,
            challenge,
            strip: c.strip,
            verified: Arc::new(Verified::new()),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        })
    }
}

/// `user` and `password` from `Authorization: Basic ...`.
fn credentials(v: &HeaderValue) -> Option<(String, String)> {
    let v = v.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[async_trait]
impl Plugin for BasicAuth {
    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        let deny = || Flow::Reply(Reply::unauthorized(self.challenge.clone()));
        let Some((user, pass)) = req
            .header(http::header::AUTHORIZATION)
            .and_then(credentials)
        else {
            return deny();
        };
        let known = self.users.get(&user);
        let d = Digest::of(&[user.as_bytes(), pass.as_bytes()]);
        let ok = if known.is_some() && self.verified.contains(&d) {
            true
        } else {
            let Ok(Ok(_permit)) =
                tokio::time::timeout(CHECK_WAIT, self.slots.clone().acquire_owned()).await
            else {
                return Flow::Reply(Reply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ReplyKind::Unavailable,
                    "authentication busy",
                ));
            };
            let hash = known.map_or_else(|| self.decoy.clone(), |(_, h)| h.clone());
            let matched = tokio::task::spawn_blocking(move || hash.check(&pass))
                .await
                .unwrap_or(false);
            matched && known.is_some()
        };
        let Some((name, _)) = known.filter(|_| ok) else {
            return deny();
        };
        self.verified.insert(d);
        req.set_consumer(Consumer::configured(name.clone()));
        if self.strip {
            req.remove_header(http::header::AUTHORIZATION);
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse() {
        let v = HeaderValue::from_static("Basic YWxpY2U6czNjcjM6dA==");
        assert_eq!(credentials(&v), Some(("alice".into(), "s3cr3:t".into())));
        assert_eq!(credentials(&HeaderValue::from_static("Bearer x")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic !!")), None);
    }

    #[test]
    fn hashes_of_each_scheme_check() {
        let b = bcrypt::hash("pw", 4).expect("bcrypt");
        let h = Hash::parse(&b).expect("bcrypt parses");
        assert!(h.check("pw") && !h.check("px"));
        let s5 = sha_crypt::sha256_simple("pw", &sha_crypt::Sha256Params::new(1000).expect("p"))
            .expect("sha256");
        let h = Hash::parse(&s5).expect("$5$ parses");
        assert!(h.check("pw") && !h.check("px"));
        assert!(Hash::parse("$apr1$abc$def").is_none());
        assert!(Hash::parse("$2y$10$short").is_none());
    }
}
