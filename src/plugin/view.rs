//! The views a plugin's hooks get: the request or response header and what the gateway knows
//! about the request, without Pingora's `Session`.

use super::Consumer;
use crate::edge::query::decode;
use http::header::{AsHeaderName, COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use std::net::IpAddr;
use std::time::Duration;

/// What the gateway established about a request before the plugins ran.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// The client IP (the peer, or from `X-Forwarded-For` behind `trusted_proxies`).
    pub client_ip: Option<IpAddr>,
    /// The normalized effective host, `name[:port]`.
    pub host: Option<&'a str>,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The matched route's name.
    pub route: &'a str,
    /// The request id (also sent upstream and to the client).
    pub request_id: Option<&'a HeaderValue>,
    /// The upstream's name, once one is chosen.
    pub upstream: Option<&'a str>,
}

impl RequestInfo<'_> {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// The client's request, as the `request` hook sees and changes it.
pub struct RequestView<'a> {
    req: &'a mut RequestHeader,
    info: RequestInfo<'a>,
    consumer: &'a mut Option<Consumer>,
    accepts_json: bool,
}

impl<'a> RequestView<'a> {
    /// A view over a request header (the gateway builds these; public for plugin tests).
    pub fn new(
        req: &'a mut RequestHeader,
        info: RequestInfo<'a>,
        consumer: &'a mut Option<Consumer>,
    ) -> Self {
        RequestView {
            req,
            info,
            consumer,
            accepts_json: false,
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.req.method
    }

    /// The normalized path.
    pub fn path(&self) -> &str {
        self.req.uri.path()
    }

    /// The raw query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.req.uri.query()
    }

    /// Every request header field.
    pub fn headers(&self) -> &HeaderMap {
        &self.req.headers
    }

    /// The first value of a header field.
    pub fn header<K: AsHeaderName>(&self, name: K) -> Option<&HeaderValue> {
        self.req.headers.get(name)
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_param(self.query()?, name)
    }

    /// A cookie's value, from the first `Cookie` field that has it.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        cookie(&self.req.headers, name)
    }

    /// What the gateway knows about the request.
    pub fn info(&self) -> &RequestInfo<'a> {
        &self.info
    }

    /// The authenticated consumer, once a plugin set it.
    pub fn consumer(&self) -> Option<&Consumer> {
        self.consumer.as_ref()
    }

    /// Sets the authenticated consumer.
    pub fn set_consumer(&mut self, consumer: Consumer) {
        *self.consumer = Some(consumer);
    }

    /// Sets a header field, replacing any values it had.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        // insert_header only fails for names and values that do not convert; these are typed.
        let _ = self.req.insert_header(name, value);
    }

    /// Removes a header field.
    pub fn remove_header<K: AsHeaderName>(&mut self, name: K) {
        if let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) {
            self.req.remove_header(&name);
        }
    }

    /// Replaces the path and keeps the query; fails when the result is not a valid target.
    pub fn set_path(&mut self, path: &str) -> Result<(), InvalidPath> {
        let pq = match self.req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        self.set_path_and_query(&pq)
    }

    /// Removes every occurrence of a query parameter.
    pub fn remove_query_param(&mut self, name: &str) -> Result<(), InvalidPath> {
        let Some(q) = self.req.uri.query() else {
            return Ok(());
        };
        let kept: Vec<&str> = q
            .split('&')
            .filter(|pair| pair.split('=').next().map(decode) != Some(name.to_string()))
            .collect();
        let path = self.req.uri.path();
        let pq = if kept.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        self.set_path_and_query(&pq)
    }

    fn set_path_and_query(&mut self, pq: &str) -> Result<(), InvalidPath> {
        let pq = http::uri::PathAndQuery::try_from(pq).map_err(|_| InvalidPath)?;
        let mut parts = self.req.uri.clone().into_parts();
        parts.path_and_query = Some(pq);
        let uri = http::Uri::from_parts(parts).map_err(|_| InvalidPath)?;
        self.req.set_uri(uri);
        Ok(())
    }

    /// Whether the client's `Accept` prefers JSON (replies are rendered to match).
    pub fn accepts_json(&self) -> bool {
        self.accepts_json
    }

    pub(crate) fn with_accept(mut self, json: bool) -> Self {
        self.accepts_json = json;
        self
    }
}

/// A path or query a plugin produced is not a valid request target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPath;

impl std::fmt::Display for InvalidPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid path")
    }
}

impl std::error::Error for InvalidPath {}

/// The request about to be sent upstream, as the `upstream_request` hook changes it.
pub struct UpstreamView<'a> {
    req: &'a mut RequestHeader,
    info: RequestInfo<'a>,
    consumer: Option<&'a Consumer>,
}

impl<'a> UpstreamView<'a> {
    /// A view over the upstream request header.
    pub fn new(
        req: &'a mut RequestHeader,
        info: RequestInfo<'a>,
        consumer: Option<&'a Consumer>,
    ) -> Self {
        UpstreamView {
            req,
            info,
            consumer,
        }
    }

    /// The path sent upstream.
    pub fn path(&self) -> &str {
        self.req.uri.path()
    }

    /// Every header field sent upstream.
    pub fn headers(&self) -> &HeaderMap {
        &self.req.headers
    }

    /// What the gateway knows about the request.
    pub fn info(&self) -> &RequestInfo<'a> {
        &self.info
    }

    /// The authenticated consumer.
    pub fn consumer(&self) -> Option<&Consumer> {
        self.consumer
    }

    /// Sets a header field, replacing any values it had.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.req.insert_header(name, value);
    }

    /// Adds a value to a header field.
    pub fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.req.append_header(name, value);
    }

    /// Removes a header field.
    pub fn remove_header(&mut self, name: &HeaderName) {
        self.req.remove_header(name);
    }
}

/// The response header about to go to the client, as the `response` hook changes it.
pub struct ResponseView<'a> {
    req: &'a RequestHeader,
    resp: &'a mut ResponseHeader,
    info: RequestInfo<'a>,
    consumer: Option<&'a Consumer>,
}

impl<'a> ResponseView<'a> {
    /// A view over the response header, with the request it answers.
    pub fn new(
        req: &'a RequestHeader,
        resp: &'a mut ResponseHeader,
        info: RequestInfo<'a>,
        consumer: Option<&'a Consumer>,
    ) -> Self {
        ResponseView {
            req,
            resp,
            info,
            consumer,
        }
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.resp.status
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.req.method
    }

    /// The client's request header fields.
    pub fn request_headers(&self) -> &HeaderMap {
        &self.req.headers
    }

    /// The response header fields.
    pub fn headers(&self) -> &HeaderMap {
        &self.resp.headers
    }

    /// What the gateway knows about the request.
    pub fn info(&self) -> &RequestInfo<'a> {
        &self.info
    }

    /// The authenticated consumer.
    pub fn consumer(&self) -> Option<&Consumer> {
        self.consumer
    }

    /// Sets a header field, replacing any values it had.
    pub fn set_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.resp.insert_header(name, value);
    }

    /// Adds a value to a header field.
    pub fn append_header(&mut self, name: HeaderName, value: HeaderValue) {
        let _ = self.resp.append_header(name, value);
    }

    /// Removes a header field.
    pub fn remove_header(&mut self, name: &HeaderName) {
        self.resp.remove_header(name);
    }
}

/// The finished request, as the `logging` hook sees it.
pub struct LogView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request path.
    pub path: &'a str,
    /// The status sent (0 when none was).
    pub status: u16,
    /// Time from the request's arrival to its end.
    pub duration: Duration,
    /// What the gateway knows about the request.
    pub info: RequestInfo<'a>,
    /// The authenticated consumer.
    pub consumer: Option<&'a Consumer>,
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// A cookie's value, from the first `Cookie` field that has it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(COOKIE).iter().find_map(|v| {
        v.to_str().ok()?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_and_cookies_are_found() {
        assert_eq!(
            query_param("a=1&api_key=x%2By+z", "api_key").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_param("a=1", "b"), None);
        assert_eq!(query_param("k=%zz%4", "k").as_deref(), Some("%zz%4"));
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; session=tok"));
        assert_eq!(cookie(&h, "session"), Some("tok"));
        assert_eq!(cookie(&h, "sess"), None);
    }
}
