//! Plugins' own HTTP requests (`forward_auth`'s subrequest, `jwt`'s JWKS fetch), through
//! Pingora's HTTP client connector and its keep-alive pool.

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::net::ToSocketAddrs;
use std::time::Duration;

/// An `http://` or `https://` URL, resolved once.
pub struct Endpoint {
    /// The peer, with the timeouts applied.
    pub peer: HttpPeer,
    /// The URL's authority, sent as `Host`.
    pub authority: HeaderValue,
    /// Path and query.
    pub path: String,
}

impl Endpoint {
    /// Parses and resolves `url`; every I/O step gets `timeout`.
    pub fn parse(url: &str, timeout: Duration) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?}: expected http:// or https://")),
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = (host, port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve {host}:{port}"))?;
        let mut peer = HttpPeer::new(addr, tls, host.to_string());
        peer.options.connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Endpoint {
            peer,
            authority: HeaderValue::from_str(auth.as_str())
                .map_err(|_| "invalid host".to_string())?,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// A `GET` of the URL, with `Host` set.
    pub fn get(&self) -> pingora_error::Result<RequestHeader> {
        let mut req = RequestHeader::build("GET", self.path.as_bytes(), Some(8))?;
        req.insert_header(http::header::HOST, self.authority.clone())?;
        Ok(req)
    }
}

/// A response read whole (up to a bound).
pub struct Fetched {
    /// The response header.
    pub header: pingora_http::ResponseHeader,
    /// The body; `None` when it was larger than the bound.
    pub body: Option<Bytes>,
}

/// Sends `req` to the endpoint and reads the answer, keeping at most `max_body` bytes of body.
pub async fn send(
    connector: &Connector,
    endpoint: &Endpoint,
    req: RequestHeader,
    max_body: usize,
) -> pingora_error::Result<Fetched> {
    let (mut session, _reused) = connector.get_http_session(&endpoint.peer).await?;
    session.write_request_header(Box::new(req)).await?;
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let Some(header) = session.response_header().cloned() else {
        return pingora_error::Error::e_explain(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "no response header",
        );
    };
    let mut body = BytesMut::new();
    let mut complete = true;
    while let Some(chunk) = session.read_response_body().await? {
        if body.len() + chunk.len() > max_body {
            complete = false;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    if complete {
        connector
            .release_http_session(session, &endpoint.peer, endpoint.peer.options.idle_timeout)
            .await;
    }
    Ok(Fetched {
        header,
        body: complete.then(|| body.freeze()),
    })
}
