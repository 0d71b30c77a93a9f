//! `cors`: answers CORS preflights and adds the CORS response fields (the Fetch standard's
//! CORS protocol). Preflights are answered before authentication, because browsers send them
//! without credentials.

use crate::config::{ConfigError, HeaderNameConf};
use crate::plugin::{
    Flow, Phase, Plugin, PluginContext, Reply, ReplyKind, RequestView, ResponseView,
};
use async_trait::async_trait;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method, StatusCode};
use serde::Deserialize;

/// The YAML of `cors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), one-label wildcards
    /// (`https://*.example.org`), or `"*"` (any, only without credentials).
    pub allow_origins: Vec<String>,
    /// Methods a preflight may ask for.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (case-insensitive).
    #[serde(default)]
    pub allow_headers: Vec<HeaderNameConf>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<HeaderNameConf>,
    /// Whether cookies and `Authorization` may be sent cross-origin.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age_seconds: Option<u32>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST"].map(String::from).to_vec()
}

#[derive(Debug)]
enum OriginRule {
    Exact(String),
    /// `scheme://*.suffix`: the part the `*` stands for must be non-empty.
    Suffix {
        prefix: String,
        suffix: String,
    },
}

/// The compiled `cors`.
pub struct Cors {
    any_origin: bool,
    origins: Vec<OriginRule>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Vec<HeaderNameConf>,
    allow_headers_value: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

impl Cors {
    /// Compiles the origin rules and renders the fixed answer fields.
    pub fn build(c: &CorsConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        if c.allow_origins.is_empty() {
            return Err(cx.error("allow_origins", "needs at least one origin"));
        }
        let mut any_origin = false;
        let mut origins = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            let key = format!("allow_origins[{i}]");
            if o == "*" {
                if c.allow_credentials {
                    return Err(cx.error(
                        &key,
                        "\"*\" cannot be combined with allow_credentials: true (browsers refuse \
                         it; list the origins)",
                    ));
                }
                any_origin = true;
                continue;
            }
            let Some((scheme, host)) = o.split_once("://") else {
                return Err(cx.error(
                    &key,
                    format!("{o:?} is not an origin (scheme://host[:port])"),
                ));
            };
            if scheme.is_empty()
                || host.is_empty()
                || host.contains('/')
                || HeaderValue::from_str(o).is_err()
            {
                return Err(cx.error(
                    &key,
                    format!("{o:?} is not an origin (scheme://host[:port])"),
                ));
            }
            let lower = o.to_ascii_lowercase();
            match host.strip_prefix('*') {
                Some(rest) if rest.starts_with('.') && !rest.contains('*') => {
                    origins.push(OriginRule::Suffix {
                        prefix: format!("{}://", scheme.to_ascii_lowercase()),
                        suffix: rest.to_ascii_lowercase(),
                    })
                }
                None if !host.contains('*') => origins.push(OriginRule::Exact(lower)),
                _ => {
                    return Err(cx.error(
                        &key,
                        format!(
                            "{o:?}: a wildcard may only be the first label (https://*.example.org)"
                        ),
                    ))
                }
            }
        }
        let mut methods = Vec::new();
        for (i, m) in c.allow_methods.iter().enumerate() {
            methods.push(Method::from_bytes(m.as_bytes()).map_err(|_| {
                cx.error(
                    &format!("allow_methods[{i}]"),
                    format!("invalid method {m:?}"),
                )
            })?);
        }
        let join = |names: &[HeaderNameConf]| {
            (!names.is_empty())
                .then(|| {
                    let s: Vec<&str> = names.iter().map(|h| h.0.as_str()).collect();
                    HeaderValue::from_str(&s.join(", ")).ok()
                })
                .flatten()
        };
        let m: Vec<&str> = methods.iter().map(Method::as_str).collect();
        Ok(Cors {
            any_origin,
            origins,
            allow_methods: HeaderValue::from_str(&m.join(", "))
                .map_err(|_| cx.error("allow_methods", "invalid methods"))?,
            methods,
            allow_headers_value: join(&c.allow_headers),
            allow_headers: c.allow_headers.clone(),
            expose_headers: join(&c.expose_headers),
            credentials: c.allow_credentials,
            max_age: c.max_age_seconds.map(HeaderValue::from),
        })
    }

    /// Whether a request's `Origin` is allowed.
    pub fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let Ok(o) = origin.to_str() else {
            return false;
        };
        let o = o.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Exact(e) => *e == o,
            OriginRule::Suffix { prefix, suffix } => o
                .strip_prefix(prefix.as_str())
                .and_then(|h| h.strip_suffix(suffix.as_str()))
                .is_some_and(|label| !label.is_empty() && !label.contains(['/', '.', '@'])),
        })
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    fn preflight(&self, origin: &HeaderValue, req: &RequestView<'_>) -> Reply {
        let method_ok = req
            .header(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        let headers_ok = req
            .headers()
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .all(|v| {
                v.to_str().is_ok_and(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .all(|h| {
                            self.allow_headers
                                .iter()
                                .any(|a| a.0.as_str().eq_ignore_ascii_case(h))
                        })
                })
            });
        let vary = HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        );
        if !self.origin_allowed(origin) || !method_ok || !headers_ok {
            return Reply::new(
                StatusCode::FORBIDDEN,
                ReplyKind::Forbidden,
                "CORS preflight refused",
            )
            .header(VARY, vary);
        }
        let mut r = Reply::new(StatusCode::NO_CONTENT, ReplyKind::Answered, "")
            .header(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin))
            .header(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone())
            .header(VARY, vary);
        r.body = crate::plugin::ReplyBody::Empty;
        if let Some(h) = &self.allow_headers_value {
            r = r.header(ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
        }
        if let Some(a) = &self.max_age {
            r = r.header(ACCESS_CONTROL_MAX_AGE, a.clone());
        }
        if self.credentials {
            r = r.header(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        r
    }
}

#[async_trait]
impl Plugin for Cors {
    fn phase(&self) -> Phase {
        Phase::Cors
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        // A preflight is an OPTIONS with Origin and Access-Control-Request-Method; any other
        // OPTIONS goes to the origin like a normal request.
        if req.method() == Method::OPTIONS && req.header(ACCESS_CONTROL_REQUEST_METHOD).is_some() {
            if let Some(origin) = req.header(ORIGIN).cloned() {
                return Flow::Reply(self.preflight(&origin, req));
            }
        }
        Flow::Continue
    }

    async fn response(&self, resp: &mut ResponseView<'_>) {
        // A preflight's answer (204 or 403) was complete when `request` wrote it.
        if resp.method() == Method::OPTIONS
            && resp
                .request_headers()
                .contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return;
        }
        // The answer depends on Origin whether or not it is allowed, so caches must key on it.
        if !self.any_origin {
            resp.append_header(VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = resp.request_headers().get(ORIGIN).cloned() else {
            return;
        };
        if !self.origin_allowed(&origin) {
            return;
        }
        resp.set_header(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(&origin),
        );
        if self.credentials {
            resp.set_header(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(e) = &self.expose_headers {
            resp.set_header(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyPath;
    use crate::edge::PathPolicy;

    fn cors(origins: &[&str], credentials: bool) -> Result<Cors, ConfigError> {
        let c = CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: default_methods(),
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: credentials,
            max_age_seconds: None,
        };
        let path = KeyPath::root().key("cors");
        let paths = PathPolicy::default();
        Cors::build(&c, &PluginContext::new(&path, &paths))
    }

    #[test]
    fn wildcard_origins_match_one_label() {
        let c = cors(&["https://app.example.com", "https://*.example.org"], true).expect("builds");
        let ok = |o: &'static str| c.origin_allowed(&HeaderValue::from_static(o));
        assert!(ok("https://app.example.com"));
        assert!(ok("https://a.example.org"));
        assert!(ok("HTTPS://A.EXAMPLE.ORG"));
        assert!(!ok("https://example.org"));
        assert!(!ok("https://a.b.example.org"));
        assert!(!ok("http://a.example.org"));
        assert!(!ok("https://evil-example.org"));
        assert!(!ok("https://app.example.com.evil.net"));
        assert!(!ok("null"));
    }

    #[test]
    fn star_with_credentials_is_refused() {
        let e = cors(&["*"], true).err().expect("refused");
        assert_eq!(e.key, "cors.allow_origins[0]");
        assert!(cors(&["*"], false).is_ok());
        assert!(cors(&["https://a.*.org"], false).is_err());
        assert!(cors(&["example.org"], false).is_err());
    }
}
