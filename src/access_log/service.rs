//! The background service that runs the access log writer in the serving process and turns
//! SIGUSR1 into a reopen request.
//!
//! Pingora forks in `run()` when daemonizing, and threads started before that are lost; a
//! background service starts after the fork. SIGUSR1 goes through tokio's signal handling,
//! which shares `signal-hook-registry` with Pingora's own SIGTERM/SIGQUIT/SIGINT handlers, so
//! neither replaces the other, and it adds no dependency.

use super::AccessLog;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::{background_service, BackgroundService};
use pingora_core::services::ServiceWithDependents;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

struct AccessLogService(Arc<AccessLog>);

/// Wraps the log in a Pingora background service.
pub(super) fn build(log: Arc<AccessLog>) -> Box<dyn ServiceWithDependents> {
    let mut svc = background_service("access log", AccessLogService(log));
    svc.threads = Some(1);
    Box::new(svc)
}

#[async_trait]
impl BackgroundService for AccessLogService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Err(e) = self.0.start() {
            log::error!("access log: cannot start the writer thread: {e}");
            return;
        }
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("access log: cannot handle SIGUSR1, no reopen on rotation: {e}");
                return;
            }
        };
        // Keeps listening through the shutdown grace period: rotation may happen then too.
        while usr1.recv().await.is_some() {
            self.0.reopen();
        }
    }
}

/// Without an access log, SIGUSR1 (sent by a logrotate `postrotate`) must not terminate the
/// gateway, which is the signal's default action: listen for it and do nothing.
pub(crate) fn ignore_sigusr1() -> Box<dyn ServiceWithDependents> {
    let mut svc = background_service("sigusr1", IgnoreUsr1);
    svc.threads = Some(1);
    Box::new(svc)
}

struct IgnoreUsr1;

#[async_trait]
impl BackgroundService for IgnoreUsr1 {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
            return;
        };
        while usr1.recv().await.is_some() {
            log::info!("SIGUSR1 ignored: no access log to reopen");
        }
    }
}
