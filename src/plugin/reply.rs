//! What a plugin's `request` hook decides: go on, or answer the client itself.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use std::borrow::Cow;

/// The outcome of [`Plugin::request`](super::Plugin::request).
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin, then proxy.
    Continue,
    /// Answer the client with this response; nothing is proxied.
    Reply(Reply),
}

/// Why a plugin answered, for `avx_errors_total{kind}` and the access log's `decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// Authentication failed or was missing (401).
    Unauthorized,
    /// Access was denied (403).
    Forbidden,
    /// A redirect or a preflight answer: not an error.
    Answered,
    /// The plugin could not decide, e.g. an auth service is unreachable (5xx).
    Unavailable,
    /// The request cannot be served as it is, e.g. a rewrite produced an invalid path (400).
    BadRequest,
}

/// A response written by the gateway on a plugin's behalf.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Extra header fields (`WWW-Authenticate`, `Location`, CORS fields).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body: a short message rendered as text or as JSON `{"error": ...}` to match the
    /// client's `Accept`, or raw bytes sent as they are (with their content type).
    pub body: ReplyBody,
    /// Why the plugin answered.
    pub kind: ReplyKind,
}

/// A reply's body.
#[derive(Debug)]
pub enum ReplyBody {
    /// No body.
    Empty,
    /// A short message, rendered as `text/plain` or as JSON for clients that accept JSON.
    Message(Cow<'static, str>),
    /// Bytes sent as they are, with this content type (when given).
    Raw(Option<HeaderValue>, Bytes),
}

impl Reply {
    /// A reply with this status, kind and message.
    pub fn new(status: StatusCode, kind: ReplyKind, message: impl Into<Cow<'static, str>>) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Message(message.into()),
            kind,
        }
    }

    /// 401 with the `WWW-Authenticate` challenge of the scheme the route expects.
    pub fn unauthorized(challenge: HeaderValue) -> Self {
        Reply::new(
            StatusCode::UNAUTHORIZED,
            ReplyKind::Unauthorized,
            "unauthorized",
        )
        .header(http::header::WWW_AUTHENTICATE, challenge)
    }

    /// 403 (or another status) for a denied request.
    pub fn forbidden(status: StatusCode) -> Self {
        Reply::new(status, ReplyKind::Forbidden, "forbidden")
    }

    /// 400: the request cannot be served as it is.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Reply::new(StatusCode::BAD_REQUEST, ReplyKind::BadRequest, message)
    }

    /// A redirect to `location`.
    pub fn redirect(status: StatusCode, location: HeaderValue) -> Self {
        Reply {
            status,
            headers: vec![(http::header::LOCATION, location)],
            body: ReplyBody::Empty,
            kind: ReplyKind::Answered,
        }
    }

    /// This reply with one more header field.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}
