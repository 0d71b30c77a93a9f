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

/// The live runtime's access log, if any (it changes when a reload changes `access_log:`).
pub type CurrentLog = Box<dyn Fn() -> Option<Arc<AccessLog>> + Send + Sync>;

struct AccessLogService(CurrentLog);

/// Wraps the log in a Pingora background service: starts the writer of the log live at start
/// and turns SIGUSR1 into a reopen of the log live then. Without a log, SIGUSR1 (sent by a
/// logrotate `postrotate`) is still caught, because its default action would terminate us.
pub fn build(current: CurrentLog) -> Box<dyn ServiceWithDependents> {
    let mut svc = background_service("access log", AccessLogService(current));
    svc.threads = Some(1);
    Box::new(svc)
}

#[async_trait]
impl BackgroundService for AccessLogService {
    async fn start(&self, _shutdown: ShutdownWatch) {
        if let Some(Err(e)) = (self.0)().map(|log| log.start()) {
            log::error!("access log: cannot start the writer thread: {e}");
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
            if let Some(log) = (self.0)() {
                log.reopen();
            }
        }
    }
}
