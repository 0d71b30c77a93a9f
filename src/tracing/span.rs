//! One request's spans: the server span, and a client span per upstream attempt.
//!
//! Attributes follow the OpenTelemetry HTTP semantic conventions, plus `avx.*` ones for the
//! gateway's own decisions. They are only built for sampled spans: an unsampled request
//! still gets ids (its `traceparent` goes upstream with the sampled flag off) but allocates
//! no attribute.

use super::context;
use http::{HeaderMap, Method};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags,
};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use pingora_http::RequestHeader;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The spans of one request, kept in its context until the `logging` hook.
pub struct RequestTrace {
    tracer: SdkTracer,
    server: Span,
    attempt: Option<Span>,
    attempts: u32,
    trace_id: [u8; 32],
}

/// What the end of a request says about it, for the server span's attributes.
pub struct Finished<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The normalized path (without the query).
    pub path: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The status sent downstream (0: none, the client went away).
    pub status: u16,
    /// The effective host's name and port, when the request had one.
    pub host: Option<(&'a str, Option<u16>)>,
    /// The client IP (behind trusted proxies, from `X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// The TCP peer.
    pub peer: Option<SocketAddr>,
    /// The matched route's name.
    pub route: Option<&'a Arc<str>>,
    /// The upstream's name.
    pub upstream: Option<&'a Arc<str>>,
    /// `X-Cache-Status`, when the cache was consulted.
    pub cache_status: Option<&'static str>,
    /// The gateway's own refusal (`rate_limited`, `circuit_open`...).
    pub decision: Option<&'static str>,
    /// The circuit breaker's admission (`allowed`, `probe`, `rejected`).
    pub breaker: Option<&'static str>,
    /// The rate limit's verdict: admitted, and requests still allowed right now.
    pub rate_limit: Option<(bool, u64)>,
    /// The proxy error's type, when the request failed.
    pub error: Option<&'static str>,
    /// The request id.
    pub request_id: Option<&'a [u8]>,
}

impl RequestTrace {
    /// Starts the server span: a child of a valid incoming `traceparent`, or a new trace.
    pub(super) fn start(tracer: &SdkTracer, headers: &HeaderMap, method: &Method) -> Self {
        let parent = match context::extract(headers) {
            Some(sc) => Context::new().with_remote_span_context(sc),
            None => Context::new(),
        };
        let server = SpanBuilder::from_name(method_name(method))
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let trace_id = context::trace_id_hex(server.span_context().trace_id());
        RequestTrace {
            tracer: tracer.clone(),
            server,
            attempt: None,
            attempts: 0,
            trace_id,
        }
    }

    /// The trace id in lowercase hex (for the access log).
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("")
    }

    /// Whether this request's spans are recorded and exported.
    pub fn sampled(&self) -> bool {
        self.server.span_context().is_sampled()
    }

    /// Starts the span of one upstream attempt (ending the previous one, which failed).
    pub fn begin_attempt(
        &mut self,
        method: &Method,
        upstream: &Arc<str>,
        addr: SocketAddr,
        host: &str,
    ) {
        self.attempt_failed("retried");
        let sc = self.server.span_context();
        // The server span is a local parent: the attempt is sampled exactly when it is.
        let local = SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags() & TraceFlags::SAMPLED,
            false,
            sc.trace_state().clone(),
        );
        let mut builder = SpanBuilder::from_name(method_name(method)).with_kind(SpanKind::Client);
        if sc.is_sampled() {
            let mut attrs = vec![
                KeyValue::new("http.request.method", method_attr(method)),
                KeyValue::new("avx.upstream", StringValue::from(upstream.clone())),
                KeyValue::new("server.address", host.to_string()),
                KeyValue::new("server.port", i64::from(addr.port())),
                KeyValue::new("network.peer.address", addr.ip().to_string()),
                KeyValue::new("network.peer.port", i64::from(addr.port())),
            ];
            if self.attempts > 0 {
                attrs.push(KeyValue::new(
                    "http.request.resend_count",
                    i64::from(self.attempts),
                ));
            }
            builder = builder.with_attributes(attrs);
        }
        self.attempts += 1;
        let parent = Context::new().with_remote_span_context(local);
        self.attempt = Some(builder.start_with_context(&self.tracer, &parent));
    }

    /// Ends the open attempt as failed (a connect error, or a retry).
    pub fn attempt_failed(&mut self, error: &str) {
        if let Some(mut span) = self.attempt.take() {
            if span.is_recording() {
                span.set_attribute(KeyValue::new("error.type", error.to_string()));
                span.set_status(Status::error(error.to_string()));
            }
            span.end();
        }
    }

    /// Records the upstream's response status on the open attempt.
    pub fn attempt_status(&mut self, status: u16) {
        if let Some(span) = self.attempt.as_mut().filter(|s| s.is_recording()) {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_attribute(KeyValue::new("error.type", status.to_string()));
                span.set_status(Status::error(""));
            }
        }
    }

    /// Sets `traceparent` (the attempt as parent) and `tracestate` on the upstream request;
    /// an incoming `tracestate` that did not come with a valid parent is removed.
    pub fn inject(&self, req: &mut RequestHeader) -> pingora_error::Result<()> {
        let span = self.attempt.as_ref().unwrap_or(&self.server);
        let sc = span.span_context();
        req.insert_header("traceparent", context::traceparent(sc))?;
        let state = sc.trace_state().header();
        if state.is_empty() {
            req.remove_header(&context::TRACESTATE);
        } else {
            req.insert_header("tracestate", state)?;
        }
        Ok(())
    }

    /// Ends the open attempt and the server span, with the request's attributes.
    pub fn finish(mut self, f: &Finished<'_>) {
        if let Some(mut span) = self.attempt.take() {
            if let (Some(e), true) = (f.error, span.is_recording()) {
                span.set_attribute(KeyValue::new("error.type", e));
                span.set_status(Status::error(e));
            }
            span.end();
        }
        let span = &mut self.server;
        if !span.is_recording() {
            return;
        }
        if let Some(route) = f.route {
            span.update_name(format!("{} {route}", method_name(f.method)));
        }
        let mut attrs = Vec::with_capacity(20);
        attrs.push(KeyValue::new("http.request.method", method_attr(f.method)));
        attrs.push(KeyValue::new("url.path", f.path.to_string()));
        attrs.push(KeyValue::new("url.scheme", f.scheme));
        if f.status != 0 {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(f.status),
            ));
        }
        if let Some((name, port)) = f.host {
            attrs.push(KeyValue::new("server.address", name.to_string()));
            if let Some(port) = port {
                attrs.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(ip) = f.client_ip {
            attrs.push(KeyValue::new("client.address", ip.to_string()));
        }
        if let Some(peer) = f.peer {
            attrs.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
            attrs.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
        }
        if let Some(route) = f.route {
            attrs.push(KeyValue::new("avx.route", StringValue::from(route.clone())));
        }
        if let Some(up) = f.upstream {
            attrs.push(KeyValue::new("avx.upstream", StringValue::from(up.clone())));
        }
        if let Some(c) = f.cache_status {
            attrs.push(KeyValue::new("avx.cache_status", c));
        }
        if let Some(d) = f.decision {
            attrs.push(KeyValue::new("avx.decision", d));
        }
        if let Some(b) = f.breaker {
            attrs.push(KeyValue::new("avx.circuit_breaker", b));
        }
        if let Some((allowed, remaining)) = f.rate_limit {
            attrs.push(KeyValue::new("avx.rate_limit.allowed", allowed));
            attrs.push(KeyValue::new(
                "avx.rate_limit.remaining",
                i64::try_from(remaining).unwrap_or(i64::MAX),
            ));
        }
        if self.attempts > 0 {
            attrs.push(KeyValue::new(
                "avx.upstream_attempts",
                i64::from(self.attempts),
            ));
        }
        if let Some(id) = f.request_id {
            attrs.push(KeyValue::new(
                "avx.request_id",
                String::from_utf8_lossy(id).into_owned(),
            ));
        }
        if f.status >= 500 {
            attrs.push(KeyValue::new("error.type", f.status.to_string()));
            span.set_status(Status::error(f.error.unwrap_or("")));
        } else if let Some(e) = f.error {
            attrs.push(KeyValue::new("error.type", e));
        }
        span.set_attributes(attrs);
        span.end();
    }
}

/// The span name for a method: the method, or `HTTP` for one outside the standard set
/// (span names must stay low-cardinality).
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "HTTP",
    }
}

/// `http.request.method`: the method, or `_OTHER` for one outside the standard set.
fn method_attr(m: &Method) -> &'static str {
    match method_name(m) {
        "HTTP" => "_OTHER",
        name => name,
    }
}
