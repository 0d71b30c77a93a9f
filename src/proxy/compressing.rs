//! Glue between the proxy phases and the compression module: negotiation before Pingora's
//! module reads the request, the per-response switches, and the gateway's own br encoder and
//! bounded gzip decoder on the body.

use super::context::RequestCtx;
use crate::runtime::Runtime;
use http::header::ACCEPT_ENCODING;
use http::{HeaderValue, Method};
use pingora_core::modules::http::compression::ResponseCompression;
use pingora_core::protocols::http::compression::Algorithm;
use pingora_error::{OrErr, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Before Pingora's compression module reads the request: show it only the negotiated
/// coding and turn it on at the route's level. The original header is restored by
/// [`restore_accept_encoding`] so the cache and the upstream see what the client sent.
pub fn prepare_compression(runtime: &Runtime, session: &mut Session, ctx: &mut RequestCtx) {
    let Some(policy) = ctx
        .route
        .and_then(|r| runtime.route(r).compression.as_ref())
    else {
        return;
    };
    let req = session.req_header_mut();
    let chosen = policy.negotiate(req.headers.get(ACCEPT_ENCODING));
    ctx.wants_br = chosen.as_bytes().starts_with(b"br");
    ctx.accepts_gzip = chosen
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii() == b"gzip");
    ctx.accept_encoding = Some(req.remove_header(&ACCEPT_ENCODING));
    if req.insert_header(ACCEPT_ENCODING, chosen).is_err() {
        return;
    }
    if let Some(c) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    {
        c.adjust_level(policy.level);
        // br is encoded by `BrotliStream` and gzip decoded by `Inflate` (see there): the
        // module only compresses gzip and zstd.
        c.adjust_algorithm_level(Algorithm::Brotli, 0);
        c.adjust_decompression(false);
    }
    ctx.compressing = true;
}

/// Puts the client's own `Accept-Encoding` back after the compression module has read it.
pub fn restore_accept_encoding(session: &mut Session, ctx: &mut RequestCtx) {
    if let Some(original) = ctx.accept_encoding.take() {
        let req = session.req_header_mut();
        req.remove_header(&ACCEPT_ENCODING);
        if let Some(v) = original {
            // A value that was valid on arrival is valid again.
            let _ = req.insert_header(ACCEPT_ENCODING, v);
        }
    }
}

/// Decides per response: decode gzip for a client that does not take it, switch to br, or
/// leave the body alone.
pub fn on_response(
    runtime: &Runtime,
    session: &mut Session,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let Some(route) = ctx.route.map(|r| runtime.route(r)) else {
        return Ok(());
    };
    if let (true, Some(policy)) = (ctx.compressing, &route.compression) {
        let head = session.req_header().method == Method::HEAD;
        let inflate = policy.decompress
            && !ctx.accepts_gzip
            && !head
            && !matches!(resp.status.as_u16(), 204 | 206 | 304)
            && !resp.status.is_informational()
            && resp
                .headers
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"gzip"));
        if inflate {
            start_inflate(policy, resp, ctx)?;
        } else if policy.allows(resp, head) {
            lowercase_content_type(resp);
            if ctx.wants_br && !resp.headers.contains_key(http::header::CONTENT_ENCODING) {
                start_brotli(policy, resp, ctx)?;
            }
        }
        if inflate || !policy.allows(resp, head) {
            // Pingora's module leaves the body alone: decoded gzip is never re-encoded.
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(0);
            }
        }
    }
    Ok(())
}

/// Media types are case-insensitive, but Pingora's own content-type check is not.
fn lowercase_content_type(resp: &mut ResponseHeader) {
    let lower = match resp.headers.get(http::header::CONTENT_TYPE) {
        Some(ct) if ct.as_bytes().iter().any(u8::is_ascii_uppercase) => {
            HeaderValue::from_bytes(&ct.as_bytes().to_ascii_lowercase()).ok()
        }
        _ => None,
    };
    if let Some(v) = lower {
        let _ = resp.insert_header(http::header::CONTENT_TYPE, v);
    }
}

/// The headers of a body the gateway re-codes as it streams: its length is unknown, ranges
/// no longer apply, a strong validator becomes weak (RFC 9110 8.8.3: the bytes differ), and
/// the response depends on `Accept-Encoding`.
fn recoded_headers(resp: &mut ResponseHeader) -> Result<()> {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    resp.remove_header(&http::header::ACCEPT_RANGES);
    resp.append_header(http::header::VARY, "Accept-Encoding")?;
    let weak = resp
        .headers
        .get(http::header::ETAG)
        .filter(|e| !e.as_bytes().starts_with(b"W/"))
        .and_then(|e| HeaderValue::from_bytes(&[b"W/", e.as_bytes()].concat()).ok());
    if let Some(w) = weak {
        resp.insert_header(http::header::ETAG, w)?;
    }
    Ok(())
}

/// Switches the response to br: headers now, body in [`encode_body`].
fn start_brotli(
    policy: &crate::compression::CompressionPolicy,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    recoded_headers(resp)?;
    resp.insert_header(http::header::CONTENT_ENCODING, "br")?;
    ctx.brotli = Some(Box::new(crate::compression::BrotliStream::new(
        policy.level,
    )));
    Ok(())
}

/// Switches a gzip response to identity for a client that does not accept gzip: headers
/// now, body in [`encode_body`], bounded by `max_decompressed_bytes`.
fn start_inflate(
    policy: &crate::compression::CompressionPolicy,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    recoded_headers(resp)?;
    resp.remove_header(&http::header::CONTENT_ENCODING);
    // HTTP/1.1 streams it chunked (Pingora drops the header on HTTP/2 and for HTTP/1.0).
    resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    ctx.inflate = Some(Box::new(crate::compression::Inflate::new(
        policy.max_decompressed_bytes,
    )));
    Ok(())
}

/// Decodes the body of a gzip response switched to identity ([`start_inflate`]). Past a
/// bound the response is cut off: the error aborts it, so an HTTP/1.1 client sees no final
/// chunk and an HTTP/2 client a reset stream; an HTTP/1.0 client's body is close-delimited,
/// so for it a cut cannot be told from the end. Before any byte went out it is a 502.
pub fn inflate_body(
    body: &mut Option<bytes::Bytes>,
    end: bool,
    ctx: &mut RequestCtx,
) -> std::result::Result<(), crate::compression::InflateError> {
    let Some(dec) = ctx.inflate.as_mut() else {
        return Ok(());
    };
    let out = dec.push(body.as_deref().unwrap_or(&[]), end)?;
    *body = Some(out);
    Ok(())
}

/// Encodes the body when the response was switched to br.
pub fn encode_body(body: &mut Option<bytes::Bytes>, end: bool, ctx: &mut RequestCtx) -> Result<()> {
    let Some(enc) = ctx.brotli.as_mut() else {
        return Ok(());
    };
    let mut out = match body.as_deref() {
        Some(chunk) if !chunk.is_empty() => enc
            .push(chunk)
            .or_err(pingora_error::ErrorType::InternalError, "brotli encoding")?
            .to_vec(),
        _ => Vec::new(),
    };
    if end {
        if let Some(enc) = ctx.brotli.take() {
            let (rest, bytes_in, bytes_out) = enc.finish();
            out.extend_from_slice(&rest);
            ctx.br_bytes = Some((bytes_in, bytes_out));
        }
    }
    *body = Some(bytes::Bytes::from(out));
    Ok(())
}
