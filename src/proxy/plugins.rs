//! Runs a route's plugin chain at each phase, and writes the answers plugins give.
//!
//! A route without plugins has an empty chain: every function here then returns after one
//! length check, with no allocation and no dynamic call.

use super::context::{EffectiveHost, Rejection, RequestCtx};
use super::header_names::REQUEST_ID;
use crate::plugin::{
    Flow, LogView, Plugin, Reply, ReplyBody, ReplyKind, RequestInfo, RequestView, ResponseView,
    UpstreamView,
};
use crate::routing::RouteId;
use crate::runtime::Runtime;
use crate::upstream::UpstreamId;
use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;
use std::sync::Arc;

/// Which of a chain's `request` hooks to run.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    /// Access, CORS and authentication: before the rate limit (so it can key on the consumer).
    BeforeLimit,
    /// Redirects, rewrites and user plugins: after the rate limit and circuit breaker.
    AfterLimit,
}

/// What the gateway knows about the request, for the plugin views. Takes the context's fields
/// one by one so the `request` hook can borrow the consumer mutably beside them.
fn info<'a>(
    runtime: &'a Runtime,
    route: RouteId,
    host: Option<&'a EffectiveHost>,
    request_id: Option<&'a HeaderValue>,
    ctx_upstream: Option<UpstreamId>,
    client_ip: Option<std::net::IpAddr>,
    tls: bool,
) -> RequestInfo<'a> {
    RequestInfo {
        client_ip,
        host: host.map(EffectiveHost::as_str),
        tls,
        route: &runtime.route(route).name,
        request_id,
        upstream: ctx_upstream.map(|u| &*runtime.upstream(u).name),
    }
}

/// [`info`] for a hook that only reads the context.
fn info_of<'a>(runtime: &'a Runtime, route: RouteId, ctx: &'a RequestCtx) -> RequestInfo<'a> {
    info(
        runtime,
        route,
        ctx.host.as_ref(),
        ctx.request_id.as_ref(),
        ctx.upstream,
        ctx.client_ip,
        ctx.tls,
    )
}

/// Runs one stage of the route's `request` hooks; returns the answer a plugin gave, to be
/// written by [`answer`] (the caller first charges it to the rate limit).
pub async fn request(
    runtime: &Runtime,
    route: RouteId,
    stage: Stage,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Option<Reply> {
    let chain = &runtime.route(route).plugins;
    let plugins = match stage {
        Stage::BeforeLimit => chain.before_limit(),
        Stage::AfterLimit => chain.after_limit(),
    };
    if plugins.is_empty() {
        return None;
    }
    let json = accepts_json(session.req_header());
    let reply = {
        let info = info(
            runtime,
            route,
            ctx.host.as_ref(),
            ctx.request_id.as_ref(),
            ctx.upstream,
            ctx.client_ip,
            ctx.tls,
        );
        let mut view =
            RequestView::new(session.req_header_mut(), info, &mut ctx.consumer).with_accept(json);
        run_request(plugins, &mut view).await
    };
    if reply.is_none() && matches!(stage, Stage::BeforeLimit) && chain.authenticates() {
        // Admitted by authentication: its answer is for this client, whatever headers are
        // left (a plugin may have stripped the credential), so shared caches treat it as
        // authorized (RFC 9111 section 3.5).
        ctx.authenticated = true;
    }
    reply
}

/// Writes a plugin's answer: the response hooks of the route's plugins run on it (CORS fields
/// and `response_headers` apply to a 401 too), and the body is text or JSON per `Accept`.
pub async fn answer(
    runtime: &Runtime,
    route: RouteId,
    session: &mut Session,
    ctx: &mut RequestCtx,
    reply: Reply,
) -> Result<()> {
    let json = accepts_json(session.req_header());
    ctx.decision = Some(match reply.kind {
        ReplyKind::Unauthorized => Rejection::Unauthorized,
        ReplyKind::Forbidden => Rejection::Forbidden,
        ReplyKind::Answered => Rejection::PluginAnswered,
        ReplyKind::Unavailable => Rejection::PluginUnavailable,
        ReplyKind::BadRequest => Rejection::BadRequest,
    });
    write_reply(runtime, route, session, ctx, reply, json).await
}

async fn run_request(plugins: &[Arc<dyn Plugin>], view: &mut RequestView<'_>) -> Option<Reply> {
    for p in plugins {
        if let Flow::Reply(r) = p.request(view).await {
            return Some(r);
        }
    }
    None
}

/// Runs the `upstream_request` hooks on the request about to be sent upstream.
pub async fn upstream_request(runtime: &Runtime, req: &mut RequestHeader, ctx: &RequestCtx) {
    let Some(route) = ctx.route else {
        return;
    };
    let plugins = runtime.route(route).plugins.all();
    if plugins.is_empty() {
        return;
    }
    let info = info_of(runtime, route, ctx);
    let mut view = UpstreamView::new(req, info, ctx.consumer.as_ref());
    for p in plugins {
        p.upstream_request(&mut view).await;
    }
}

/// Runs the `response` hooks on the response header about to go to the client.
pub async fn response(
    runtime: &Runtime,
    session: &Session,
    resp: &mut ResponseHeader,
    ctx: &RequestCtx,
) {
    let Some(route) = ctx.route else {
        return;
    };
    let plugins = runtime.route(route).plugins.all();
    if plugins.is_empty() {
        return;
    }
    let info = info_of(runtime, route, ctx);
    let mut view = ResponseView::new(session.req_header(), resp, info, ctx.consumer.as_ref());
    for p in plugins {
        p.response(&mut view).await;
    }
}

/// Runs the `logging` hooks on the finished request.
pub async fn logging(runtime: &Runtime, session: &Session, ctx: &RequestCtx) {
    let Some(route) = ctx.route else {
        return;
    };
    let plugins = runtime.route(route).plugins.all();
    if plugins.is_empty() {
        return;
    }
    let req = session.req_header();
    let view = LogView {
        method: &req.method,
        path: req.uri.path(),
        status: session.response_written().map_or(0, |h| h.status.as_u16()),
        duration: ctx.started.elapsed(),
        info: info_of(runtime, route, ctx),
        consumer: ctx.consumer.as_ref(),
    };
    for p in plugins {
        p.logging(&view).await;
    }
}

/// Whether the client's `Accept` names JSON (`application/json` or a `+json` type).
fn accepts_json(req: &RequestHeader) -> bool {
    req.headers.get_all(ACCEPT).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|range| {
                let media = range.split(';').next().unwrap_or("").trim();
                media.eq_ignore_ascii_case("application/json")
                    || media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case("+json")
            })
        })
    })
}

/// Writes a plugin's reply: its status and fields, and its body as text or JSON.
async fn write_reply(
    runtime: &Runtime,
    route: RouteId,
    session: &mut Session,
    ctx: &RequestCtx,
    reply: Reply,
    json: bool,
) -> Result<()> {
    let (content_type, body) = match reply.body {
        ReplyBody::Empty => (None, Bytes::new()),
        ReplyBody::Message(_) if reply.status == http::StatusCode::NO_CONTENT => {
            (None, Bytes::new())
        }
        ReplyBody::Message(m) if json => (
            Some(HeaderValue::from_static("application/json")),
            Bytes::from(serde_json::json!({ "error": m }).to_string() + "\n"),
        ),
        ReplyBody::Message(m) => (
            Some(HeaderValue::from_static("text/plain; charset=utf-8")),
            Bytes::from(format!("{m}\n")),
        ),
        ReplyBody::Raw(ct, bytes) => (ct, bytes),
    };
    let mut h = ResponseHeader::build(reply.status, Some(reply.headers.len() + 3))?;
    for (name, value) in reply.headers {
        h.append_header(name, value)?;
    }
    if let Some(ct) = content_type {
        h.insert_header(CONTENT_TYPE, ct)?;
    }
    // RFC 9110 §8.6: no Content-Length on a 204.
    if reply.status != http::StatusCode::NO_CONTENT {
        h.insert_header(CONTENT_LENGTH, body.len())?;
    }
    if let Some(id) = &ctx.request_id {
        REQUEST_ID.set_on_response(&mut h, id.clone())?;
    }
    super::protection::rate_headers(runtime, ctx, &mut h)?;
    let hooks = runtime.route(route).plugins.all();
    if !hooks.is_empty() {
        let info = info_of(runtime, route, ctx);
        let mut view = ResponseView::new(session.req_header(), &mut h, info, ctx.consumer.as_ref());
        for p in hooks {
            p.response(&mut view).await;
        }
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    let no_body = head_only || body.is_empty();
    session.write_response_header(Box::new(h), no_body).await?;
    if !no_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_recognized_in_accept() {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        assert!(!accepts_json(&req));
        req.insert_header("accept", "text/html, application/json;q=0.9")
            .expect("header");
        assert!(accepts_json(&req));
        req.insert_header("accept", "application/problem+json")
            .expect("header");
        assert!(accepts_json(&req));
        req.insert_header("accept", "*/*").expect("header");
        assert!(!accepts_json(&req));
    }
}
