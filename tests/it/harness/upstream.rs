//! Small real HTTP/1.1 origin servers (hyper) on loopback, with endpoints the tests need.
//!
//! Endpoints:
//! - `/health`: 200 while healthy, 503 otherwise ([`TestUpstream::set_healthy`]);
//! - `/slow?ms=N`: answers after N ms;
//! - `/download?bytes=N`: streams N bytes in 64 KiB chunks;
//! - `/upload`: reads the whole body and answers with its length;
//! - `/status/NNN`: answers with that status;
//! - anything else: a JSON echo of the request (`upstream`, `method`, `uri`, `headers`).
//!
//! While [`TestUpstream::set_fail_status`] is set, every request except `/health` is answered
//! with that status instead. Every response carries `x-upstream: NAME`.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The response body type of the harness's hyper origins.
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves HTTP/1.1 (with upgrades) on `listener`, one task per connection, answering every
/// request with `handler`. The accept loop ends when the returned task is aborted.
pub fn serve_http1<H, Fut>(listener: TcpListener, handler: H) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    super::accept_loop(listener, move |sock| {
        let handler = handler.clone();
        async move {
            let svc = service_fn(move |req| {
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .with_upgrades()
                .await;
        }
    })
}

/// Shared counters of one upstream.
#[derive(Default)]
pub struct UpstreamState {
    /// Requests answered, excluding `/health`.
    pub hits: AtomicUsize,
    /// Requests currently being answered.
    pub inflight: AtomicUsize,
    /// Health-check requests seen.
    pub health_checks: AtomicUsize,
    healthy: AtomicBool,
    /// Status every non-health request gets while failing; 0 when serving normally.
    fail_status: AtomicU16,
}

/// A running origin server, stopped on drop.
pub struct TestUpstream {
    /// Its name, echoed in `x-upstream`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl TestUpstream {
    /// Starts an upstream on a free loopback port.
    pub async fn start(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, listener)
    }

    /// Starts an upstream on a given address (to bring a stopped one back on the same port).
    pub async fn start_at(name: &str, addr: SocketAddr) -> TestUpstream {
        let listener = TcpListener::bind(addr).await.expect("rebind upstream");
        Self::serve(name, listener)
    }

    fn serve(name: &str, listener: TcpListener) -> TestUpstream {
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let (st, nm) = (state.clone(), name.to_string());
        let task = serve_http1(listener, move |req| handle(req, st.clone(), nm.clone()));
        TestUpstream {
            name: name.to_string(),
            addr,
            state,
            task,
        }
    }

    /// Requests answered so far (excluding health checks).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests being answered right now (excluding health checks).
    pub fn inflight(&self) -> usize {
        self.state.inflight.load(Ordering::SeqCst)
    }

    /// Health-check requests seen so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Makes `/health` answer 200 (true) or 503 (false).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes every request except `/health` fail with `status` (`None`: serve normally again).
    pub fn set_fail_status(&self, status: Option<u16>) {
        self.state
            .fail_status
            .store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Stops listening and drops every open connection.
    pub fn stop(self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn query_num(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

async fn handle(req: Request<Incoming>, state: Arc<UpstreamState>, name: String) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let ok = state.healthy.load(Ordering::SeqCst);
        let mut resp = Response::new(full(if ok { "ok" } else { "down" }));
        *resp.status_mut() = if ok { 200u16 } else { 503 }.try_into().unwrap_or_default();
        return resp;
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mut resp = match state.fail_status.load(Ordering::SeqCst) {
        0 => {
            state.inflight.fetch_add(1, Ordering::SeqCst);
            let resp = route(req, &path, &name).await;
            state.inflight.fetch_sub(1, Ordering::SeqCst);
            resp
        }
        code => {
            let mut resp = Response::new(full(format!("failing with {code}")));
            *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or_default();
            resp
        }
    };
    resp.headers_mut()
        .insert("x-upstream", name.parse().expect("upstream name header"));
    resp
}

async fn route(req: Request<Incoming>, path: &str, name: &str) -> Response<Body> {
    if path == "/slow" {
        let ms = query_num(&req, "ms").unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Response::new(full("slow done"));
    }
    if path == "/download" {
        let total = query_num(&req, "bytes").unwrap_or(0);
        const CHUNK: u64 = 64 * 1024;
        let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
        let n = total.div_ceil(CHUNK);
        let frames = stream::iter((0..n).map(move |i| {
            let len = CHUNK.min(total - i * CHUNK) as usize;
            Ok::<_, Infallible>(Frame::data(chunk.slice(..len)))
        }));
        return Response::new(BodyExt::boxed(StreamBody::new(frames)));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Response::new(full(n.to_string()));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut resp = Response::new(full(format!("status {code}")));
        if let Ok(s) = code.parse::<u16>() {
            *resp.status_mut() = hyper::StatusCode::from_u16(s).unwrap_or_default();
        }
        return resp;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "upstream": name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    });
    let mut resp = Response::new(full(body.to_string()));
    resp.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("content type"),
    );
    resp
}
