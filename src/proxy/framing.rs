//! Request framing checks Pingora leaves to the application: header size and CL+TE conflicts.

use pingora_proxy::Session;

/// A request refused before routing, as (status, body): a header block larger than
/// `max_header_bytes` (431), or an HTTP/1 request that carried both Content-Length and
/// Transfer-Encoding (400, RFC 9112 section 6.3: the classic smuggling vector).
///
/// Pingora drops the Content-Length of such a request before any hook runs, so the raw header
/// bytes are checked.
pub fn problem(session: &Session, max_header_bytes: usize) -> Option<(u16, &'static str)> {
    const TOO_LARGE: (u16, &str) = (431, "request header fields too large\n");
    if let Some(h1) = session.as_http1() {
        let raw = h1.get_headers_raw_bytes();
        if raw.len() > max_header_bytes {
            return Some(TOO_LARGE);
        }
        let chunked = session
            .req_header()
            .headers
            .contains_key(http::header::TRANSFER_ENCODING);
        if chunked && raw.split(|&b| b == b'\n').skip(1).any(is_content_length) {
            return Some((
                400,
                "bad request: both Content-Length and Transfer-Encoding\n",
            ));
        }
    } else {
        let size: usize = session
            .req_header()
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if size > max_header_bytes {
            return Some(TOO_LARGE);
        }
    }
    None
}

fn is_content_length(line: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME)
}
