//! The admin listener: liveness, readiness, a JSON status document and Prometheus metrics.

use crate::cache::Scheme;
use crate::config::AdminConfig;
use crate::reload::{ReloadError, Reloader};
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
pub fn service(cfg: &AdminConfig, reloader: &Arc<Reloader>) -> Box<dyn ServiceWithDependents> {
    let app = AdminApp {
        reloader: reloader.clone(),
        startup: AdminAuth::new(cfg),
    };
    let mut svc = Service::new("avx-gateway admin".to_string(), app);
    // One thread is plenty for scrapes and probes, and keeps the admin off the proxy workers.
    svc.threads = Some(1);
    svc.add_tcp(&cfg.address);
    log::info!("admin listening on {}", cfg.address);
    Box::new(svc)
}

/// The admin listener's credentials and the names it answers to, from `admin:` (a reload
/// applies a new token at once).
pub struct AdminAuth {
    token: Option<String>,
    /// Names accepted in `Host` besides IP literals and `localhost`.
    allowed_hosts: Vec<String>,
}

impl AdminAuth {
    /// Compiles `admin:`.
    pub fn new(cfg: &AdminConfig) -> AdminAuth {
        AdminAuth {
            token: cfg.token.as_ref().map(|t| format!("Bearer {t}")),
            allowed_hosts: cfg
                .allowed_hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }
}

/// Serves the admin endpoints.
pub struct AdminApp {
    reloader: Arc<Reloader>,
    /// Used if the live config had no `admin:` (a reload cannot remove it).
    startup: AdminAuth,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let runtime = self.reloader.live().load();
        let auth = runtime.admin.as_ref().unwrap_or(&self.startup);
        let req = session.req_header();
        if !auth.host_allowed(req.headers.get(http::header::HOST)) {
            // A page whose DNS name was rebound to this address would send its own name.
            return text(StatusCode::FORBIDDEN, "forbidden host\n");
        }
        let path = req.uri.path().to_string();
        let liveness = path == "/health" && req.method == http::Method::GET;
        if !liveness {
            if let Some(token) = &auth.token {
                let given = req.headers.get(http::header::AUTHORIZATION);
                if !token_matches(given.map(|v| v.as_bytes()), token.as_bytes()) {
                    return text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                }
            }
        }
        let method = req.method.clone();
        if method.as_str() == "PURGE" || (method == http::Method::DELETE && path == "/cache") {
            return purge(&runtime, session).await;
        }
        if path == "/reload" {
            return match method {
                http::Method::POST => self.reload().await,
                _ => text(StatusCode::METHOD_NOT_ALLOWED, "use POST /reload\n"),
            };
        }
        match path.as_str() {
            "/health" => text(StatusCode::OK, "ok\n"),
            "/ready" => {
                if ready(&runtime) {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            "/status" => json_response(self.status(&runtime)),
            "/metrics" => build(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                runtime.metrics.encode(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Compares the presented credentials with the token in constant time (for equal lengths),
/// so response timing says nothing about how much of a guess was right.
fn token_matches(given: Option<&[u8]>, token: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|g| bool::from(g.ct_eq(token)))
}

impl AdminAuth {
    /// DNS-rebinding defence: `Host` must be an IP literal, `localhost` or an allowed name.
    /// A request without `Host` (no browser sends one) is let through.
    fn host_allowed(&self, host: Option<&http::HeaderValue>) -> bool {
        let Some(host) = host else {
            return true;
        };
        let Ok(n) = crate::edge::target::normalize_host(host.as_bytes(), 0) else {
            return false;
        };
        let text = n
            .rewritten
            .unwrap_or_else(|| String::from_utf8_lossy(host.as_bytes()).into_owned());
        let name = &text[..n.name_len];
        name.starts_with('[')
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || self.allowed_hosts.iter().any(|h| h == name)
    }
}

/// `PURGE /path` (the site's host in `Host`), or `DELETE /cache` with `url=`, `prefix=`
/// (and optional `host=`), or nothing for everything.
async fn purge(runtime: &Runtime, session: &mut ServerSession) -> Response<Vec<u8>> {
    {
        let Some(store) = &runtime.cache else {
            return text(StatusCode::NOT_FOUND, "no route caches\n");
        };
        let req = session.req_header();
        let n = if req.method.as_str() == "PURGE" {
            let host = req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| normal_host(h, 80))
                .unwrap_or_default();
            let pq = req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            store.purge_url(None, &host, &pq).await
        } else {
            let q = |k: &str| query_param(req.uri.query().unwrap_or(""), k);
            match (q("url"), q("prefix"), q("host")) {
                (Some(url), _, _) => match url.parse::<http::Uri>() {
                    Ok(u) => {
                        let pq = u.path_and_query().map_or("/", |p| p.as_str());
                        let (scheme, port) = match u.scheme_str() {
                            Some("https") => (Some(Scheme::Https), 443),
                            Some("http") => (Some(Scheme::Http), 80),
                            _ => (None, 80),
                        };
                        let host = u
                            .authority()
                            .map_or(String::new(), |a| normal_host(a.as_str(), port));
                        store.purge_url(scheme, &host, pq).await
                    }
                    Err(_) => return text(StatusCode::BAD_REQUEST, "bad url\n"),
                },
                (None, Some(prefix), host) => {
                    let host = host.map(|h| normal_host(&h, 80));
                    store
                        .purge_where(|primary| {
                            crate::cache::primary_path(primary).starts_with(prefix.as_str())
                                && host
                                    .as_deref()
                                    .is_none_or(|h| crate::cache::primary_host(primary) == h)
                        })
                        .await
                }
                (None, None, _) => store.purge_where(|_| true).await,
            }
        };
        let status = if n > 0 {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        build(
            status,
            "application/json",
            json!({ "purged": n }).to_string().into_bytes(),
        )
    }
}

/// Ready once every upstream has a healthy (or unchecked) backend.
fn ready(runtime: &Runtime) -> bool {
    runtime.upstreams.iter().all(|u| u.healthy_count() > 0)
}

impl AdminApp {
    /// `POST /reload`: 200 with the new generation, 400 for a bad file, 409 for a change that
    /// needs the binary upgrade; the message names file, line and key.
    async fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload("POST /reload").await {
            Ok(done) => json_response(json!({
                "reloaded": true,
                "generation": done.generation,
                "sha256": done.hash,
            })),
            Err(e) => {
                let status = match e {
                    ReloadError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ReloadError::Refused(_) => StatusCode::CONFLICT,
                    ReloadError::Unavailable => StatusCode::NOT_IMPLEMENTED,
                };
                text(status, &format!("{}\n", e.message()))
            }
        }
    }

    fn status(&self, runtime: &Runtime) -> serde_json::Value {
        let now = crate::policy::now_us();
        let config = self.reloader.live().status();
        let loaded_unix = config
            .loaded_at
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let upstreams: serde_json::Map<String, serde_json::Value> = runtime
            .upstreams
            .iter()
            .map(|u| {
                let backends: Vec<_> = u
                    .backends()
                    .iter()
                    .map(|b| {
                        json!({
                            "address": b.addr.to_string(),
                            "weight": b.weight,
                            "healthy": u.is_healthy(b),
                            "inflight": b.inflight.load(std::sync::atomic::Ordering::Relaxed),
                            "ejected": u.is_ejected(b, now),
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
                        "dns": u.dns.as_deref().map(dns_status),
                    }),
                )
            })
            .collect();
        let routes: Vec<_> = runtime
            .routes
            .iter()
            .map(|r| json!({ "name": &*r.name }))
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "ready": ready(runtime),
            "config": {
                "generation": config.generation,
                "loaded_at": httpdate::fmt_http_date(config.loaded_at),
                "loaded_at_unix": loaded_unix,
                "sha256": config.hash,
                "last_error": config.last_error,
            },
            "routes": routes,
            "upstreams": upstreams,
            "cache": runtime.cache.as_ref().map(|c| json!({
                "entries": c.entries(),
                "bytes": c.bytes(),
                "evictions": c.evictions(),
            })),
            "tracing": {
                "enabled": runtime.tracing.is_some(),
                "exported": runtime.tracing.as_ref().map_or(0, |t| t.stats().exported()),
                "dropped": runtime.tracing.as_ref().map_or(0, |t| t.stats().dropped()),
            },
            "redis": runtime.redis.as_ref().map(|r| json!({
                "connected": r.is_up(),
                "errors": r.errors() + r.timeouts(),
            })),
        })
    }
}

/// An upstream's DNS names: what each resolved to, and when it was last looked up.
fn dns_status(dns: &crate::upstream::DnsState) -> serde_json::Value {
    let (ok, error) = dns.lookups();
    let names: Vec<_> = dns
        .names()
        .iter()
        .map(|n| {
            let at = n.last_lookup();
            json!({
                "name": n.name,
                "addresses": n.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "last_lookup": at.map(httpdate::fmt_http_date),
                "last_lookup_unix_ms": at
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_millis() as u64),
                "last_error": n.last_error(),
            })
        })
        .collect();
    json!({ "names": names, "lookups_ok": ok, "lookups_error": error })
}

/// A host as the cache keys it (normalized like a request's `Host`); kept as given when it
/// does not parse, so it simply matches nothing.
fn normal_host(host: &str, default_port: u16) -> String {
    match crate::edge::target::normalize_host(host.as_bytes(), default_port) {
        Ok(n) => n.rewritten.unwrap_or_else(|| host.to_string()),
        Err(_) => host.to_string(),
    }
}

/// A percent-decoded query parameter.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| crate::edge::query::decode(v))
    })
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
