//! Proxy listeners: one Pingora service per h2c setting, TLS with h2 through ALPN.

use crate::config::Config;
use crate::proxy::GatewayProxy;
use crate::reload::LiveRuntime;
use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::listening::Service;
use pingora_core::services::ServiceWithDependents;
use pingora_error::{OrErr, Result};
use pingora_proxy::{http_proxy, HttpProxy};
use std::sync::Arc;
use std::time::Duration;

/// Builds the proxy services for all `listeners:`.
pub(super) fn proxy_services(
    conf: &Arc<ServerConf>,
    config: &Config,
    live: &Arc<LiveRuntime>,
) -> Result<Vec<Box<dyn ServiceWithDependents>>> {
    // Listener settings are fixed at start (a reload that changes them is refused).
    let runtime = live.load();
    let mut services: Vec<Box<dyn ServiceWithDependents>> = Vec::new();
    // h2c is a per-service option, so cleartext-h2 listeners get a service of their own.
    for h2c in [false, true] {
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .filter(|l| (l.h2c && l.tls.is_none()) == h2c)
            .collect();
        if listeners.is_empty() {
            continue;
        }
        let mut proxy = http_proxy(conf, GatewayProxy::new(live.clone()));
        let mut opts = HttpServerOptions::default();
        opts.h2c = h2c;
        opts.keepalive_request_limit = runtime.downstream.keepalive_requests;
        opts.h2_idle_timeout = Some(Duration::from_secs(
            runtime.downstream.keepalive_timeout_secs.max(1),
        ));
        // One deadline from accept: the TLS handshake (below), the h2c preface and the h2
        // handshake (here), then the first request header (`HeaderTimeout`).
        opts.handshake_timeout = Some(runtime.downstream.header_read_timeout);
        proxy.server_options = Some(opts);
        let app = HeaderTimeout {
            inner: Arc::new(proxy),
            timeout: runtime.downstream.header_read_timeout,
            preserve_header_case: config.server.preserve_header_case,
        };
        let name = if h2c {
            "avx-gateway h2c"
        } else {
            "avx-gateway"
        };
        let mut service = Service::new(name.to_string(), app);
        service.set_handshake_timeout(runtime.downstream.header_read_timeout);
        // Shared by both services, so `server.max_connections` caps the process.
        service.set_connection_limit(runtime.connections.clone());
        for l in listeners {
            match &l.tls {
                Some(tls) => {
                    let mut settings = TlsSettings::intermediate(&tls.cert, &tls.key)
                        .or_err_with(pingora_error::ErrorType::InternalError, || {
                            format!("loading TLS certificate for listener {}", l.address)
                        })?;
                    if tls.h2 {
                        settings.enable_h2();
                    }
                    service.add_tls_with_settings(&l.address, None, settings);
                }
                None => service.add_tcp(&l.address),
            }
            log::info!(
                "listening on {}{}{}",
                l.address,
                if l.tls.is_some() { " (tls)" } else { "" },
                if l.h2c { " (h2c)" } else { "" }
            );
        }
        services.push(Box::new(service));
    }
    Ok(services)
}

/// Fails when a listener or the admin address cannot be bound (in use, or not permitted).
pub(super) fn check_bindable(config: &Config) -> Result<()> {
    let admin = config
        .admin
        .iter()
        .map(|a| ("admin.address".to_string(), &a.address));
    let public = config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("listeners[{i}].address"), &l.address));
    for (key, addr) in public.chain(admin) {
        std::net::TcpListener::bind(addr.as_str())
            .or_err_with(pingora_error::ErrorType::BindError, || {
                format!("{key}: cannot listen on {addr}")
            })?;
    }
    Ok(())
}

/// Bounds how long a client may take to send its request header, as one deadline for the
/// whole header (a client trickling a byte at a time gains nothing), not a per-read timeout.
///
/// The first request of a connection must be complete `header_read_timeout_ms` after the
/// connection was accepted (the TLS or h2 handshake counts against it); a later request on a
/// kept-alive connection, that long after its first byte arrived.
struct HeaderTimeout {
    inner: Arc<HttpProxy<GatewayProxy>>,
    timeout: Duration,
    /// `server.preserve_header_case` (fixed at start, like the listeners).
    preserve_header_case: bool,
}

#[async_trait]
impl HttpServerApp for HeaderTimeout {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // Pingora reads a request header under the keep-alive timeout whenever one is set (it
        // sets 60 s on every new connection) and only falls back to `read_timeout` when
        // keep-alive is off. Turn it off for the first request of a connection so the header
        // read is bounded by `header_read_timeout_ms`; `respect_keepalive` and
        // `early_request_filter` switch it back on once the header is parsed. A reused
        // connection carries the marker from `persist_connection_context` and keeps its idle
        // keep-alive timeout.
        let reused = session.take_connection_user_context();
        let deadline = if reused.is_none() {
            session.set_keepalive(None);
            self.timeout.saturating_sub(since_accept(&session))
        } else {
            self.timeout
        };
        session.set_connection_user_context(reused);
        session.set_read_timeout(Some(self.timeout));
        // Zero would mean "already late": give it a millisecond to fail the read cleanly.
        session.set_header_read_timeout(Some(deadline.max(Duration::from_millis(1))));
        session.set_preserve_header_case(self.preserve_header_case);
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

/// Time since the connection was accepted (its transport layer's establishment).
fn since_accept(session: &ServerSession) -> Duration {
    session
        .digest()
        .and_then(|d| d.timing_digest.first().cloned().flatten())
        .and_then(|t| t.established_ts.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}
