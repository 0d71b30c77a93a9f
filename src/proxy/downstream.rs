//! Per-connection settings applied to every downstream request: keep-alive, body read
//! timeout, and `Connection: close` while draining.

use crate::runtime::DownstreamSettings;
use pingora_proxy::Session;

/// Applies `server:`'s keep-alive and timeout settings to the request's connection.
pub fn configure(session: &mut Session, d: &DownstreamSettings) {
    // Only a connection the client keeps alive (HTTP/1.1, or HTTP/1.0 that asked) gets the
    // configured idle timeout; 0 turns keep-alive off, as in NGINX (Pingora would read it as
    // "forever").
    if session.get_keepalive().is_some() {
        session.set_keepalive((d.keepalive_timeout_secs > 0).then_some(d.keepalive_timeout_secs));
    }
    if d.keepalive_requests.is_some() {
        session.set_keepalive_reuses_remaining(d.keepalive_requests);
    }
    session.set_read_timeout(Some(d.body_read_timeout));
    // From SIGQUIT/SIGTERM on, answer with `Connection: close` (see `server::draining`).
    if crate::server::draining() {
        session.set_keepalive(None);
    }
}
