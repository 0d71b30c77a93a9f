//! A TLS origin (hyper behind tokio-rustls) with a self-signed rcgen certificate.
//!
//! ALPN offers `h2` and `http/1.1`; the connection is served as HTTP/2 when the client chose
//! `h2`, as HTTP/1.1 otherwise. Every request is answered with a JSON echo:
//! `sni` (the name the client sent, or null), `alpn`, `version` (`HTTP/1.1`, `HTTP/2.0`),
//! `host` (the Host header, or null), `authority` (of the request URI, or null), `method`,
//! `path` (path and query) and `uri`. `/health` answers the same echo and is counted apart.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto::ring, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Counters of one TLS origin.
#[derive(Default)]
pub struct TlsState {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// TLS handshakes completed.
    pub handshakes: AtomicUsize,
    /// Requests answered, excluding `/health`.
    pub hits: AtomicUsize,
    /// `/health` requests answered.
    pub health_checks: AtomicUsize,
    /// The echo of the latest `/health` request.
    pub last_health: Mutex<Option<serde_json::Value>>,
}

/// A running TLS origin, stopped on drop.
pub struct TlsUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The DNS name its certificate is issued for.
    pub cert_name: String,
    /// Its counters.
    pub state: Arc<TlsState>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    /// Starts an origin on a free loopback port with a certificate for `cert_name`.
    pub async fn start(cert_name: &str) -> TlsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TLS upstream");
        Self::serve(cert_name, listener)
    }

    /// Starts an origin on a given address (to bring a stopped one back on the same port).
    pub async fn start_at(cert_name: &str, addr: SocketAddr) -> TlsUpstream {
        let listener = TcpListener::bind(addr).await.expect("rebind TLS upstream");
        Self::serve(cert_name, listener)
    }

    fn serve(cert_name: &str, listener: TcpListener) -> TlsUpstream {
        let addr = listener.local_addr().expect("TLS upstream addr");
        let acceptor = TlsAcceptor::from(Arc::new(server_config(cert_name)));
        let state = Arc::new(TlsState::default());
        let st = state.clone();
        let task = super::accept_loop(listener, move |sock| {
            st.connections.fetch_add(1, Ordering::SeqCst);
            serve_conn(acceptor.clone(), sock, st.clone())
        });
        TlsUpstream {
            addr,
            cert_name: cert_name.to_string(),
            state,
            task,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// Requests answered so far (excluding `/health`).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// `/health` requests answered so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// The echo of the latest `/health` request.
    pub fn last_health(&self) -> Option<serde_json::Value> {
        self.state
            .last_health
            .lock()
            .expect("last_health lock")
            .clone()
    }

    /// Stops listening and drops every open connection.
    pub fn stop(self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A rustls server config with a fresh self-signed certificate for `name`, ALPN h2 + http/1.1.
fn server_config(name: &str) -> ServerConfig {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()])
        .expect("self-signed certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .expect("certificate and key");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

/// What the TLS handshake of one connection settled.
struct ConnInfo {
    sni: Option<String>,
    alpn: Option<String>,
}

async fn serve_conn(acceptor: TlsAcceptor, sock: tokio::net::TcpStream, st: Arc<TlsState>) {
    // A failed handshake (say, the client rejected the certificate) just ends the connection.
    let Ok(tls) = acceptor.accept(sock).await else {
        return;
    };
    st.handshakes.fetch_add(1, Ordering::SeqCst);
    let conn = tls.get_ref().1;
    let info = Arc::new(ConnInfo {
        sni: conn.server_name().map(str::to_owned),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    });
    let h2 = info.alpn.as_deref() == Some("h2");
    let svc = service_fn(move |req| handle(req, info.clone(), st.clone()));
    let io = TokioIo::new(tls);
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

async fn handle(
    req: Request<Incoming>,
    info: Arc<ConnInfo>,
    st: Arc<TlsState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let echo = serde_json::json!({
        "sni": info.sni,
        "alpn": info.alpn,
        "version": format!("{:?}", req.version()),
        "host": host,
        "authority": req.uri().authority().map(|a| a.to_string()),
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map(|p| p.to_string()),
        "uri": req.uri().to_string(),
    });
    if req.uri().path() == "/health" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        *st.last_health.lock().expect("last_health lock") = Some(echo.clone());
    } else {
        st.hits.fetch_add(1, Ordering::SeqCst);
    }
    let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())));
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("content type"),
    );
    Ok(resp)
}
