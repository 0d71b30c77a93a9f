//! `forward_auth`: asks an auth service about each request, like NGINX `auth_request` and
//! Traefik `ForwardAuth`. A 2xx lets the request through (with headers copied from the
//! answer); any other answer is returned to the client; no answer in time is a 503.
//!
//! The subrequest goes through Pingora's own HTTP client connector (`subrequest`), with its
//! connection pool, so no second HTTP stack is compiled in and keep-alive to the auth service
//! comes for free.

use super::subrequest::{send, Endpoint};
use crate::config::{ConfigError, HeaderNameConf};
use crate::plugin::{
    Consumer, Flow, Phase, Plugin, PluginContext, Reply, ReplyBody, ReplyKind, RequestView,
};
use async_trait::async_trait;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora_core::connectors::http::Connector;
use pingora_http::RequestHeader;
use serde::Deserialize;
use std::time::Duration;

/// The YAML of `forward_auth`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The auth service: `http://host:port/path` or `https://...` (resolved once, at load).
    pub url: String,
    /// Time allowed for the whole subrequest, connect included.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Client request headers sent to the auth service (plus `X-Forwarded-Method`,
    /// `X-Forwarded-Uri`, `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For`).
    #[serde(default)]
    pub request_headers: Vec<HeaderNameConf>,
    /// Headers copied from a 2xx answer onto the request sent upstream; the client's own
    /// values of these headers are always removed.
    #[serde(default)]
    pub upstream_headers: Vec<HeaderNameConf>,
    /// A header of the 2xx answer that names the consumer.
    #[serde(default)]
    pub consumer_header: Option<HeaderNameConf>,
    /// Largest denial body passed back to the client.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
}

fn default_timeout() -> u64 {
    500
}

fn default_max_body() -> usize {
    64 * 1024
}

/// The compiled `forward_auth`.
pub struct ForwardAuth {
    endpoint: Endpoint,
    timeout: Duration,
    request_headers: Vec<HeaderName>,
    upstream_headers: Vec<HeaderName>,
    consumer_header: Option<HeaderName>,
    max_body: usize,
    connector: Connector,
}

/// Fields of an answer that describe its connection, not its message (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

/// What the auth service said.
enum Verdict {
    Allow(Vec<(HeaderName, HeaderValue)>),
    Deny(Reply),
}

impl ForwardAuth {
    /// Parses the URL and resolves its host once.
    pub fn build(c: &ForwardAuthConfig, cx: &PluginContext<'_>) -> Result<Self, ConfigError> {
        if c.timeout_ms == 0 {
            return Err(cx.error("timeout_ms", "must be > 0"));
        }
        let timeout = Duration::from_millis(c.timeout_ms);
        let endpoint = Endpoint::parse(&c.url, timeout).map_err(|m| cx.error("url", m))?;
        Ok(ForwardAuth {
            endpoint,
            timeout,
            request_headers: c.request_headers.iter().map(|h| h.0.clone()).collect(),
            upstream_headers: c.upstream_headers.iter().map(|h| h.0.clone()).collect(),
            consumer_header: c.consumer_header.as_ref().map(|h| h.0.clone()),
            max_body: c.max_body_bytes,
            connector: Connector::new(None),
        })
    }

    fn subrequest(&self, req: &RequestView<'_>) -> pingora_error::Result<RequestHeader> {
        let mut sub = self.endpoint.get()?;
        for name in &self.request_headers {
            for v in req.headers().get_all(name) {
                sub.append_header(name.clone(), v.clone())?;
            }
        }
        let info = req.info();
        sub.insert_header("x-forwarded-method", req.method().as_str())?;
        let uri = match req.query() {
            Some(q) => format!("{}?{q}", req.path()),
            None => req.path().to_string(),
        };
        sub.insert_header("x-forwarded-uri", uri)?;
        if let Some(h) = info.host {
            sub.insert_header("x-forwarded-host", h)?;
        }
        sub.insert_header("x-forwarded-proto", info.scheme())?;
        if let Some(ip) = info.client_ip {
            sub.insert_header("x-forwarded-for", ip.to_string())?;
        }
        Ok(sub)
    }

    async fn ask(&self, sub: RequestHeader) -> pingora_error::Result<Verdict> {
        let answer = send(&self.connector, &self.endpoint, sub, self.max_body).await?;
        let resp = &answer.header;
        let status = resp.status;
        let headers: Vec<(HeaderName, HeaderValue)> = resp
            .headers
            .iter()
            .filter(|(n, _)| !hop_by_hop(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let content_type = resp.headers.get(http::header::CONTENT_TYPE).cloned();
        let complete = answer.body.is_some();
        if status.is_success() {
            return Ok(Verdict::Allow(headers));
        }
        let kind = match status {
            StatusCode::UNAUTHORIZED => ReplyKind::Unauthorized,
            StatusCode::FORBIDDEN => ReplyKind::Forbidden,
            s if s.is_server_error() => ReplyKind::Unavailable,
            _ => ReplyKind::Answered,
        };
        let body = if let Some(body) = answer.body {
            ReplyBody::Raw(content_type, body)
        } else {
            // Too large to pass on whole; the status and fields still say what happened.
            ReplyBody::Empty
        };
        let headers = headers
            .into_iter()
            .filter(|(n, _)| n != http::header::CONTENT_TYPE || complete)
            .collect();
        Ok(Verdict::Deny(Reply {
            status,
            headers,
            body,
            kind,
        }))
    }
}

#[async_trait]
impl Plugin for ForwardAuth {
    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    async fn request(&self, req: &mut RequestView<'_>) -> Flow {
        for h in &self.upstream_headers {
            req.remove_header(h);
        }
        let unavailable = |why: &'static str| {
            Flow::Reply(Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ReplyKind::Unavailable,
                why,
            ))
        };
        let Ok(sub) = self.subrequest(req) else {
            return unavailable("authentication unavailable");
        };
        let verdict = match tokio::time::timeout(self.timeout, self.ask(sub)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                log::warn!("forward_auth: {e}");
                return unavailable("authentication unavailable");
            }
            Err(_) => {
                log::warn!("forward_auth: no answer within {:?}", self.timeout);
                return unavailable("authentication unavailable");
            }
        };
        match verdict {
            Verdict::Deny(reply) => Flow::Reply(reply),
            Verdict::Allow(headers) => {
                for (name, value) in &headers {
                    if self.upstream_headers.contains(name) {
                        req.set_header(name.clone(), value.clone());
                    }
                }
                if let Some(ch) = &self.consumer_header {
                    if let Some((_, v)) = headers.iter().find(|(n, _)| n == ch) {
                        if let Ok(name) = v.to_str() {
                            req.set_consumer(Consumer::external(name));
                        }
                    }
                }
                Flow::Continue
            }
        }
    }
}
