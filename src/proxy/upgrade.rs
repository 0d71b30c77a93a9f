//! Protocol upgrades: a `101 Switching Protocols` from the upstream is honoured only when the
//! client asked for that upgrade, so an origin cannot turn a plain request into a raw tunnel.

use http::header::UPGRADE;
use http::HeaderMap;
use pingora_http::{RequestHeader, ResponseHeader};

/// Whether a `101` may be passed on: the request carried `Upgrade` (HTTP/2 requests cannot)
/// and every protocol the response switches to is one the request offered (RFC 9110 §7.8).
pub fn switch_allowed(req: &RequestHeader, resp: &ResponseHeader) -> bool {
    let offered = tokens(&req.headers);
    let chosen = tokens(&resp.headers);
    !offered.is_empty()
        && !chosen.is_empty()
        && chosen
            .iter()
            .all(|c| offered.iter().any(|o| o.eq_ignore_ascii_case(c)))
}

fn tokens(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(upgrade: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(u) = upgrade {
            r.insert_header("upgrade", u).unwrap();
        }
        r
    }

    fn resp(upgrade: Option<&str>) -> ResponseHeader {
        let mut r = ResponseHeader::build(101, None).unwrap();
        if let Some(u) = upgrade {
            r.insert_header("upgrade", u).unwrap();
        }
        r
    }

    #[test]
    fn only_the_offered_protocol() {
        assert!(switch_allowed(
            &req(Some("websocket")),
            &resp(Some("WebSocket"))
        ));
        assert!(switch_allowed(
            &req(Some("h2c, websocket")),
            &resp(Some("websocket"))
        ));
        assert!(!switch_allowed(&req(None), &resp(Some("websocket"))));
        assert!(!switch_allowed(&req(Some("websocket")), &resp(Some("h2c"))));
        assert!(!switch_allowed(&req(Some("websocket")), &resp(None)));
    }
}
