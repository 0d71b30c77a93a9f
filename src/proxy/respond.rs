//! Responses the gateway writes itself: fixed `respond:` routes and error pages.

use super::context::RequestCtx;
use super::header_names::REQUEST_ID;
use crate::routing::FixedResponse;
use crate::runtime::Runtime;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::HeaderValue;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Writes a `respond:` route's fixed response.
pub async fn fixed(
    runtime: &Runtime,
    session: &mut Session,
    ctx: &RequestCtx,
    resp: &FixedResponse,
) -> Result<()> {
    let mut h = ResponseHeader::build(resp.status, Some(resp.headers.len() + 6))?;
    super::protection::rate_headers(runtime, ctx, &mut h)?;
    for (k, v) in &resp.headers {
        h.insert_header(k.clone(), v.clone())?;
    }
    h.insert_header(CONTENT_LENGTH, resp.body.len())?;
    if let Some(id) = &ctx.request_id {
        REQUEST_ID.set_on_response(&mut h, id.clone())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only || resp.body.is_empty())
        .await?;
    if !head_only && !resp.body.is_empty() {
        session
            .write_response_body(Some(resp.body.clone()), true)
            .await?;
    }
    Ok(())
}

/// Answers a request refused by [`admission::route`](super::admission::route).
pub async fn refusal(
    session: &mut Session,
    ctx: &mut RequestCtx,
    r: super::admission::Refusal,
) -> Result<()> {
    ctx.decision = Some(r.decision);
    error(session, ctx, r.status, &r.body, r.close).await
}

/// Writes a short plain-text error page and asks for the connection to close when `close`.
pub async fn error(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: &str,
    close: bool,
) -> Result<()> {
    error_with(
        session,
        ctx,
        status,
        body,
        close,
        ResponseHeader::build(status, Some(4))?,
    )
    .await
}

/// Like [`error`], on a header that already carries extra fields (e.g. `Retry-After`).
pub async fn error_with(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: &str,
    close: bool,
    mut h: ResponseHeader,
) -> Result<()> {
    debug_assert_eq!(h.status.as_u16(), status);
    h.insert_header(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    )?;
    h.insert_header(CONTENT_LENGTH, body.len())?;
    if let Some(id) = &ctx.request_id {
        REQUEST_ID.set_on_response(&mut h, id.clone())?;
    }
    if close {
        session.set_keepalive(None);
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session
            .write_response_body(Some(Bytes::copy_from_slice(body.as_bytes())), true)
            .await?;
    }
    Ok(())
}
