//! The header names the gateway sets on every request and response, parsed once.
//!
//! `insert_header` parses its name again on every call, and a name outside the `http` crate's
//! standard list (every `X-Forwarded-*`, `X-Request-Id`, `RateLimit-*`) is then copied into a
//! fresh allocation. These go in through `insert_parsed_header` (pingora-http patch 1) instead:
//! without a case map (`server.preserve_header_case: false`) that is one map insert.

use http::{HeaderName, HeaderValue};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};

/// A header name parsed at compile time, with the spelling written when case is preserved.
pub struct KnownHeader {
    name: HeaderName,
    case: &'static str,
}

impl KnownHeader {
    /// `lower` is the name in lowercase, `case` the same name as written on the wire.
    const fn new(lower: &'static str, case: &'static str) -> KnownHeader {
        KnownHeader {
            name: HeaderName::from_static(lower),
            case,
        }
    }

    /// The parsed name, for lookups.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Replaces every value of this header on a request with `value`.
    pub fn set_on_request(&self, req: &mut RequestHeader, value: HeaderValue) -> Result<()> {
        req.insert_parsed_header(&self.name, self.case, value)
    }

    /// Replaces every value of this header on a response with `value`.
    pub fn set_on_response(&self, resp: &mut ResponseHeader, value: HeaderValue) -> Result<()> {
        resp.insert_parsed_header(&self.name, self.case, value)
    }
}

/// `X-Forwarded-For`.
pub static FORWARDED_FOR: KnownHeader = KnownHeader::new("x-forwarded-for", "X-Forwarded-For");
/// `X-Forwarded-Proto`.
pub static FORWARDED_PROTO: KnownHeader =
    KnownHeader::new("x-forwarded-proto", "X-Forwarded-Proto");
/// `X-Forwarded-Host`.
pub static FORWARDED_HOST: KnownHeader = KnownHeader::new("x-forwarded-host", "X-Forwarded-Host");
/// `X-Forwarded-Port`.
pub static FORWARDED_PORT: KnownHeader = KnownHeader::new("x-forwarded-port", "X-Forwarded-Port");
/// The request id header, forwarded upstream and returned downstream.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Request-Id` as written on the wire when case is preserved.
pub const X_REQUEST_ID_NAME: &str = "X-Request-Id";
/// `X-Request-Id`, set on every upstream request and every response the gateway sends.
pub static REQUEST_ID: KnownHeader = KnownHeader::new("x-request-id", X_REQUEST_ID_NAME);
/// `RateLimit-Limit` (lowercase on the wire, as the gateway always wrote it).
pub static RATELIMIT_LIMIT: KnownHeader = KnownHeader::new("ratelimit-limit", "ratelimit-limit");
/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: KnownHeader = KnownHeader::new("ratelimit-policy", "ratelimit-policy");
/// `RateLimit-Remaining`.
pub static RATELIMIT_REMAINING: KnownHeader =
    KnownHeader::new("ratelimit-remaining", "ratelimit-remaining");
/// `RateLimit-Reset`.
pub static RATELIMIT_RESET: KnownHeader = KnownHeader::new("ratelimit-reset", "ratelimit-reset");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_spellings_name_the_same_header() {
        for h in [
            &FORWARDED_FOR,
            &FORWARDED_PROTO,
            &FORWARDED_HOST,
            &FORWARDED_PORT,
            &REQUEST_ID,
            &RATELIMIT_LIMIT,
            &RATELIMIT_POLICY,
            &RATELIMIT_REMAINING,
            &RATELIMIT_RESET,
        ] {
            assert!(h.case.eq_ignore_ascii_case(h.name.as_str()), "{}", h.case);
        }
    }

    #[test]
    fn spelling_on_the_wire_follows_the_case_map() {
        let mut kept = RequestHeader::build("GET", b"/", None).expect("request");
        REQUEST_ID
            .set_on_request(&mut kept, HeaderValue::from_static("a"))
            .expect("insert");
        let mut wire = Vec::new();
        kept.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"X-Request-Id: a\r\n");

        let mut plain = ResponseHeader::build_no_case(200, None).expect("response");
        REQUEST_ID
            .set_on_response(&mut plain, HeaderValue::from_static("b"))
            .expect("insert");
        let mut wire = Vec::new();
        plain.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"x-request-id: b\r\n");
    }
}
