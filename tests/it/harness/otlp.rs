//! A real OTLP/HTTP trace receiver on loopback: decodes each `POST /v1/traces` body
//! (`ExportTraceServiceRequest`, protobuf) with `opentelemetry-proto` and keeps the spans.
//!
//! [`OtlpReceiver::set_hang`] makes it accept requests and never answer them, like a
//! collector that stalls.

use super::upstream::{full, serve_http1, Body};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{crypto::ring, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// One received span, with ids in lowercase hex and attribute values rendered as text.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The span name.
    pub name: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// OTLP span kind: 2 server, 3 client.
    pub kind: i32,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Attributes (strings as they are, ints and bools in decimal / `true`).
    pub attrs: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
    /// The W3C trace state carried by the span.
    pub trace_state: String,
}

impl ReceivedSpan {
    /// An attribute's text, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: AtomicUsize,
    hang: AtomicBool,
}

/// The receiver, stopped on drop.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
    scheme: &'static str,
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port.
    pub async fn start() -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind otlp");
        let addr = listener.local_addr().expect("otlp addr");
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = serve_http1(listener, move |req| handle(req, st.clone()));
        OtlpReceiver {
            addr,
            state,
            task,
            scheme: "http",
        }
    }

    /// Starts an `https://` receiver whose certificate, for `localhost`, is signed by a fresh
    /// CA; returns it with that CA's PEM (for the gateway's `SSL_CERT_FILE`).
    pub async fn start_tls() -> (OtlpReceiver, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind otlp");
        let addr = listener.local_addr().expect("otlp addr");
        let (config, ca_pem) = tls_config();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let state = Arc::new(State::default());
        let st = state.clone();
        let task = super::accept_loop(listener, move |sock| {
            let (acceptor, st) = (acceptor.clone(), st.clone());
            async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(handle(req, st).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            }
        });
        let receiver = OtlpReceiver {
            addr,
            state,
            task,
            scheme: "https",
        };
        (receiver, ca_pem)
    }

    /// The URL to put in `tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}/v1/traces", self.addr.port()),
            _ => format!("http://{}/v1/traces", self.addr),
        }
    }

    /// Makes every new request hang unanswered (true) or be served again (false).
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    /// Export requests received so far (answered or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.spans.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` spans arrived; returns them all.
    pub async fn wait_spans(&self, n: usize, deadline: Duration) -> Vec<ReceivedSpan> {
        super::wait_until(deadline, || async { self.spans().len() >= n }).await;
        self.spans()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one export request: decoded spans are kept, anything else is refused.
async fn handle(req: Request<Incoming>, st: Arc<State>) -> Response<Body> {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if st.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let path_ok = req.uri().path() == "/v1/traces";
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(400),
    };
    if !path_ok || ct != "application/x-protobuf" {
        return status(415);
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return status(400);
    };
    st.spans.lock().unwrap().extend(flatten(export));
    Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(full(Vec::new()))
        .unwrap()
}

/// A server config for `localhost` signed by a new CA, and the CA's PEM.
fn tls_config() -> (ServerConfig, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "avx test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("certificate and key");
    (config, ca.pem())
}

fn status(code: u16) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(full(Vec::new()))
        .unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: s.kind,
                    status: s.status.map_or(0, |st| st.code),
                    attrs: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    service: service.clone(),
                    trace_state: s.trace_state,
                });
            }
        }
    }
    out
}
