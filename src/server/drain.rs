//! Upgrade drain: from SIGQUIT (or SIGTERM) on, every response says `Connection: close`.
//!
//! On SIGQUIT Pingora hands the listening sockets to the new process and keeps accepting for
//! a fixed 5 s; only then does it broadcast shutdown, stop accepting and close every idle
//! keep-alive connection (`HttpProxy::http_cleanup` wakes connections parked in
//! `read_request` and drops them). A client that sends its next request on such a connection
//! just as it is closed gets a reset or "connection closed before message completed", and
//! HTTP clients do not retry a request they already wrote. Telling clients to close after
//! each response from the moment SIGQUIT arrives moves them to fresh connections (accepted
//! by the new process, or by the old one for one more response) long before the old process
//! closes anything, so nothing is idle on the old process when it does.

use async_trait::async_trait;
use pingora_core::server::{ExecutionPhase, ShutdownWatch};
use pingora_core::services::background::BackgroundService;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use tokio::sync::broadcast::{error::RecvError, Receiver};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether this process is handing over (SIGQUIT) or terminating (SIGTERM): responses should
/// close their connection instead of keeping it alive.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Watches Pingora's execution phases and sets [`draining`] when a handoff or shutdown starts.
pub(super) struct DrainWatch {
    phases: Mutex<Option<Receiver<ExecutionPhase>>>,
}

impl DrainWatch {
    pub(super) fn new(phases: Receiver<ExecutionPhase>) -> Self {
        DrainWatch {
            phases: Mutex::new(Some(phases)),
        }
    }
}

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        loop {
            tokio::select! {
                phase = phases.recv() => match phase {
                    Ok(
                        ExecutionPhase::GracefulUpgradeTransferringFds
                        | ExecutionPhase::GracefulUpgradeCloseTimeout
                        | ExecutionPhase::GracefulTerminate
                        | ExecutionPhase::ShutdownStarted,
                    ) => {
                        if !DRAINING.swap(true, Ordering::Relaxed) {
                            log::info!("draining: responses now close their connections");
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = shutdown.changed() => {
                    DRAINING.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}
