//! `redirect`: sends plain-HTTP clients to HTTPS, or paths matching a regex to a new location.

use crate::config::{ConfigError, RegexConf};
use crate::plugin::{Flow, Phase, Plugin, PluginContext, Reply, RequestView};
use async_trait::async_trait;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

/// The YAML of `redirect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// Redirect every plain-HTTP request to the same URL on `https`.
    #[serde(default)]
    pub https: bool,
    /// The HTTPS port, when not 443.
    #[serde(default)]
    pub https_port: Option<u16>,
    /// Redirect paths matching this regex (the whole path is matched against it).
    #[serde(default)]
    pub regex: Option<RegexConf>,
    /// The new location, with `$1`, `${name}` captures: a path or an absolute URL.
    #[serde(default)]
    pub replacement: Option<String>,
    /// Keep the request's query on the new location.
    #[serde(default = "yes")]
    pub keep_query: bool,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_status")]
    pub status: u16,
}

fn yes() -> bool {
    true
}

fn default_status() -> u16 {
    301
}

/// The compiled `redirect`.
pub struct Redirect {
    https: Option<Option<u16>>,
    rule: Option<(regex::Regex, String)>,
    keep_query: bool,
    status: StatusCode,
}

impl Redirect {
    /// Checks the combination and compiles the rule.
    pub fn build(c: &RedirectConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        if !matches!(c.status, 301 | 302 | 303 | 307 | 308) {
            return Err(cx.error(
                "status",
                format!(
                    "{} is not a redirect status (301, 302, 303, 307, 308)",
                    c.status
                ),
            ));
        }
        let rule = match (&c.regex, &c.replacement) {
            (Some(RegexConf(re)), Some(rep)) => {
                super::rewrite::check_replacement(re, rep)
                    .map_err(|m| cx.error("replacement", m))?;
                fixed_authority(rep).map_err(|m| cx.error("replacement", m))?;
                Some((re.clone(), rep.clone()))
            }
            (None, None) => None,
            (Some(_), None) => return Err(cx.error("replacement", "regex needs a replacement")),
            (None, Some(_)) => return Err(cx.error("regex", "replacement needs a regex")),
        };
        if c.https == rule.is_some() {
            return Err(cx.error("", "needs either https: true or regex with replacement"));
        }
        if c.https_port.is_some() && !c.https {
            return Err(cx.error("https_port", "only with https: true"));
        }
        Ok(Redirect {
            https: c.https.then_some(c.https_port.filter(|p| *p != 443)),
            rule,
            keep_query: c.keep_query,
            status: StatusCode::from_u16(c.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        })
    }

    /// Where a request goes, when this plugin redirects it; `Err` when it cannot be sent
    /// safely.
    fn location(&self, req: &RequestView<'_>) -> Option<Result<String, &'static str>> {
        let mut loc = if let Some(port) = self.https {
            if req.info().tls {
                return None;
            }
            // Only the normalized effective host, never a raw client Host, goes into Location.
            let Some(host) = req.info().host else {
                return Some(Err("no host to redirect to"));
            };
            let name = match host.rfind(':') {
                Some(i) if !host.ends_with(']') => &host[..i],
                _ => host,
            };
            match port {
                Some(p) => format!("https://{name}:{p}{}", req.path()),
                None => format!("https://{name}{}", req.path()),
            }
        } else {
            let (re, rep) = self.rule.as_ref()?;
            let caps = re.captures(req.path())?;
            let mut out = String::new();
            caps.expand(rep, &mut out);
            // A capture must not turn a path into another site (`//evil.example`, `/\evil`).
            if !is_absolute(rep) && !is_local_path(&out) {
                return Some(Err("redirect target is not a local path"));
            }
            out
        };
        if self.keep_query {
            if let Some(q) = req.query() {
                loc.push(if loc.contains('?') { '&' } else { '?' });
                loc.push_str(q);
            }
        }
        Some(Ok(loc))
    }
}

/// `/path`, but not `//host` or `/\host` (which browsers read as another site).
fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p[1..].starts_with(['/', '\\'])
}

/// Whether a replacement is an absolute URL: it starts with a literal `scheme://` (RFC 3986
/// scheme characters, no capture before the `://`).
fn is_absolute(rep: &str) -> bool {
    rep.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// A replacement is either a local path (`/new/$1`) or an absolute URL whose scheme and
/// authority are written out before any capture (`https://new.example/$1`), so what the
/// client sent can never choose the site.
fn fixed_authority(rep: &str) -> Result<(), String> {
    if !is_absolute(rep) {
        if !rep.starts_with('/') {
            return Err(format!(
                "{rep:?}: expected a path starting with / or an absolute URL (https://host/...)"
            ));
        }
        return Ok(());
    }
    let rest = rep.split_once("://").map_or("", |(_, r)| r);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..authority_end].contains('$') {
        return Err(format!(
            "{rep:?}: a capture may only follow the host and a '/', '?' or '#' (https://host/$1)"
        ));
    }
    Ok(())
}

#[async_trait]
impl Plugin for Redirect {
    fn phase(&self) -> Phase {
        Phase::Redirect
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        let bad = |why: &'static str| Flow::Reply(Reply::bad_request(why));
        match self.location(req) {
            None => Flow::Continue,
            Some(Ok(loc)) => match HeaderValue::from_str(&loc) {
                Ok(v) => Flow::Reply(Reply::redirect(self.status, v)),
                Err(_) => bad("invalid redirect target"),
            },
            Some(Err(why)) => bad(why),
        }
    }
}
