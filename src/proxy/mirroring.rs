//! `routes[].mirror`: starts the copy of a request and feeds it the body
//! ([`crate::upstream::Mirror`] does the sending).

use super::context::RequestCtx;
use crate::runtime::Runtime;
use pingora_http::RequestHeader;
use pingora_proxy::Session;

/// Starts the route's mirror copy of the request as sent upstream (once per request, not per
/// retry); the body follows through [`crate::upstream::BodyTap`].
pub fn start(runtime: &Runtime, session: &mut Session, req: &RequestHeader, ctx: &mut RequestCtx) {
    let Some(mirror) = ctx.route.and_then(|r| runtime.route(r).mirror.as_ref()) else {
        return;
    };
    if std::mem::replace(&mut ctx.mirror_started, true) {
        // A retry replays the body from Pingora's buffer: the copy would get chunks twice, so
        // a copy still taking its body is abandoned instead.
        ctx.mirror_tap = None;
        return;
    }
    // HTTP/2 uploads need not announce a length; Pingora knows whether a body follows.
    let has_body = !session.is_body_empty();
    ctx.mirror_tap = mirror
        .start(req, has_body)
        .filter(|_| has_body)
        .map(Box::new);
}

/// Hands a body chunk to the copy, if one is waiting for it; never waits.
pub fn body(ctx: &mut RequestCtx, body: Option<&bytes::Bytes>, end: bool) {
    if let Some(tap) = ctx.mirror_tap.as_mut() {
        tap.offer(body, end);
    }
}
