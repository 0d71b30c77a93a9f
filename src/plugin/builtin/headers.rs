//! `request_headers` and `response_headers`: set, add and remove header fields, with values
//! that may use request variables (compiled at load, rendered per request).

use crate::config::{HeaderNameConf, HeaderPairs};
use crate::plugin::template::Template;
use crate::plugin::{Plugin, ResponseView, UpstreamView};
use async_trait::async_trait;
use http::HeaderName;
use serde::Deserialize;

/// The YAML of `request_headers` and `response_headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// Fields set, replacing any values they had.
    #[serde(default)]
    pub set: HeaderPairs<Template>,
    /// Values appended to fields.
    #[serde(default)]
    pub add: HeaderPairs<Template>,
    /// Fields removed (before `set` and `add` apply).
    #[serde(default)]
    pub remove: Vec<HeaderNameConf>,
}

/// The compiled edit list shared by both plugins.
struct Edits {
    set: Box<[(HeaderName, Template)]>,
    add: Box<[(HeaderName, Template)]>,
    remove: Box<[HeaderName]>,
}

impl Edits {
    fn new(c: &HeadersConfig) -> Self {
        Edits {
            set: c.set.0.clone().into(),
            add: c.add.0.clone().into(),
            remove: c.remove.iter().map(|h| h.0.clone()).collect(),
        }
    }
}

/// `request_headers`: edits the request sent upstream, after the gateway's own forwarding
/// fields, so `$upstream` is known.
pub struct RequestHeaders(Edits);

impl RequestHeaders {
    /// Compiles the edits.
    pub fn build(c: &HeadersConfig) -> Self {
        RequestHeaders(Edits::new(c))
    }
}

#[async_trait]
impl Plugin for RequestHeaders {
    async fn upstream_request(&self, req: &mut UpstreamView<'_>) {
        let e = &self.0;
        for name in e.remove.iter() {
            req.remove_header(name);
        }
        for (name, t) in e.set.iter() {
            match t.render(req.info(), req.consumer()) {
                Some(v) => req.set_header(name.clone(), v),
                // A value that cannot be sent must not leave the client's own value in place.
                None => req.remove_header(name),
            }
        }
        for (name, t) in e.add.iter() {
            if let Some(v) = t.render(req.info(), req.consumer()) {
                req.append_header(name.clone(), v);
            }
        }
    }
}

/// `response_headers`: edits the response header sent to the client (proxied or cached).
pub struct ResponseHeaders(Edits);

impl ResponseHeaders {
    /// Compiles the edits.
    pub fn build(c: &HeadersConfig) -> Self {
        ResponseHeaders(Edits::new(c))
    }
}

#[async_trait]
impl Plugin for ResponseHeaders {
    async fn response(&self, resp: &mut ResponseView<'_>) {
        let e = &self.0;
        for name in e.remove.iter() {
            resp.remove_header(name);
        }
        for (name, t) in e.set.iter() {
            match t.render(resp.info(), resp.consumer()) {
                Some(v) => resp.set_header(name.clone(), v),
                None => resp.remove_header(name),
            }
        }
        for (name, t) in e.add.iter() {
            if let Some(v) = t.render(resp.info(), resp.consumer()) {
                resp.append_header(name.clone(), v);
            }
        }
    }
}
