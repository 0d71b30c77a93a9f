//! The OTLP exporter's HTTP client: Pingora's own connector and keep-alive pool, so exporting
//! adds no HTTP or TLS crate (rustls on ring, like every other connection the gateway makes).

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use std::time::Duration;

/// Largest collector answer read (an `ExportTraceServiceResponse` is a few bytes).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Sends export requests through a Pingora [`Connector`], each bounded by `timeout`.
pub struct PingoraClient {
    connector: Connector,
    timeout: Duration,
}

impl std::fmt::Debug for PingoraClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PingoraClient")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PingoraClient {
    /// A client whose every request (connect, send, answer) finishes within `timeout`.
    pub fn new(timeout: Duration) -> PingoraClient {
        PingoraClient {
            connector: Connector::new(None),
            timeout,
        }
    }

    fn peer(&self, addr: std::net::SocketAddr, tls: bool, name: &str) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, tls, name.to_string());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(30));
        peer
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = request.uri().clone();
        let tls = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or("export URL without a host")?;
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let name = host.trim_start_matches('[').trim_end_matches(']');
        // Resolved per export (every few seconds at most), so a collector behind DNS can move;
        // tokio resolves on its blocking pool, and an IP literal needs no lookup at all.
        let addrs: Vec<_> = tokio::net::lookup_host((name, port)).await?.collect();
        if addrs.is_empty() {
            return Err(format!("{name}:{port} did not resolve").into());
        }

        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = RequestHeader::build(request.method().as_str(), path.as_bytes(), None)?;
        let authority = uri.authority().map_or(name, |a| a.as_str());
        req.insert_header(http::header::HOST, authority)?;
        for (k, v) in request.headers() {
            req.insert_header(k.clone(), v.clone())?;
        }
        let body = request.into_body();
        req.insert_header(http::header::CONTENT_LENGTH, body.len())?;

        // The first address that accepts a connection (a name may resolve to IPv6 and IPv4).
        let mut last_err = None;
        let mut connected = None;
        for addr in addrs {
            let peer = self.peer(addr, tls, name);
            match self.connector.get_http_session(&peer).await {
                Ok((session, _reused)) => {
                    connected = Some((session, peer));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((mut session, peer)) = connected else {
            return Err(match last_err {
                Some(e) => e.into(),
                None => "no address to connect to".into(),
            });
        };
        session.write_request_header(Box::new(req)).await?;
        session.write_request_body(body, true).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let header = session
            .response_header()
            .ok_or("no response header")?
            .clone();
        let mut answer = BytesMut::new();
        let mut complete = true;
        while let Some(chunk) = session.read_response_body().await? {
            if answer.len() + chunk.len() > MAX_RESPONSE_BODY {
                complete = false;
                break;
            }
            answer.extend_from_slice(&chunk);
        }
        if complete {
            self.connector
                .release_http_session(session, &peer, peer.options.idle_timeout)
                .await;
        }
        let mut resp = Response::new(answer.freeze());
        *resp.status_mut() = header.status;
        *resp.headers_mut() = header.headers.clone();
        Ok(resp)
    }
}

#[async_trait]
impl HttpClient for PingoraClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match tokio::time::timeout(self.timeout, self.send(request)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout).into()),
        }
    }
}
