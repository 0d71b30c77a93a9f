//! The admin listener: liveness, readiness and a JSON status document.

use crate::config::AdminConfig;
use crate::runtime::Runtime;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;
use serde_json::json;
use std::sync::Arc;

/// Builds the admin service listening on `admin.address`.
pub fn service(cfg: &AdminConfig, runtime: &Arc<Runtime>) -> Box<dyn ServiceWithDependents> {
    let app = AdminApp {
        runtime: runtime.clone(),
        token: cfg.token.as_ref().map(|t| format!("Bearer {t}")),
    };
    let mut svc = Service::new("avx-gateway admin".to_string(), app);
    // One thread is plenty for scrapes and probes, and keeps the admin off the proxy workers.
    svc.threads = Some(1);
    svc.add_tcp(&cfg.address);
    log::info!("admin listening on {}", cfg.address);
    Box::new(svc)
}

/// Serves the admin endpoints.
pub struct AdminApp {
    runtime: Arc<Runtime>,
    token: Option<String>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        if path != "/health" {
            if let Some(token) = &self.token {
                let given = req.headers.get(http::header::AUTHORIZATION);
                if given.map(|v| v.as_bytes()) != Some(token.as_bytes()) {
                    return text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                }
            }
        }
        match path.as_str() {
            "/health" => text(StatusCode::OK, "ok\n"),
            "/ready" => {
                if self.ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            "/status" => json_response(self.status()),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl AdminApp {
    /// Ready once every upstream has a healthy (or unchecked) backend.
    fn ready(&self) -> bool {
        self.runtime.upstreams.iter().all(|u| u.healthy_count() > 0)
    }

    fn status(&self) -> serde_json::Value {
        let now = crate::policy::now_us();
        let upstreams: serde_json::Map<String, serde_json::Value> = self
            .runtime
            .upstreams
            .iter()
            .map(|u| {
                let backends: Vec<_> = u
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        json!({
                            "address": b.addr.to_string(),
                            "weight": b.weight,
                            "healthy": u.is_healthy(i),
                            "inflight": b.inflight.load(std::sync::atomic::Ordering::Relaxed),
                            "ejected": u.is_ejected(i, now),
                        })
                    })
                    .collect();
                let breaker = u.breaker.as_ref().map(
                    |b| json!({ "state": b.state().as_str(), "transitions": b.transitions() }),
                );
                (
                    u.name.to_string(),
                    json!({
                        "health_checked": u.health_checked,
                        "backends": backends,
                        "circuit_breaker": breaker,
                    }),
                )
            })
            .collect();
        let routes: Vec<_> = self
            .runtime
            .routes
            .routes()
            .iter()
            .map(|r| json!({ "name": &*r.name }))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "ready": self.ready(),
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    build(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json_response(v: serde_json::Value) -> Response<Vec<u8>> {
    build(
        StatusCode::OK,
        "application/json",
        v.to_string().into_bytes(),
    )
}

fn build(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(ct) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    resp
}
