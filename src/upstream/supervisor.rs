//! Runs the background loops (active health checks) of the upstreams the live runtime holds,
//! starting loops for upstreams a reload adds and stopping those of upstreams it drops.

use super::Upstream;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The upstream set of the live runtime, published by whoever swaps runtimes in.
pub type UpstreamSet = Arc<[Arc<Upstream>]>;

/// A Pingora background service over the live upstream set.
pub struct Supervisor {
    live: watch::Receiver<UpstreamSet>,
}

impl Supervisor {
    /// A supervisor following `live`.
    pub fn new(live: watch::Receiver<UpstreamSet>) -> Supervisor {
        Supervisor { live }
    }
}

/// Upstreams are kept across a reload as the same `Arc` when unchanged, so its address is
/// the identity of a running loop.
fn identity(up: &Arc<Upstream>) -> usize {
    Arc::as_ptr(up) as usize
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut live = self.live.clone();
        let mut running: HashMap<usize, (Arc<Upstream>, JoinHandle<()>)> = HashMap::new();
        loop {
            let current = live.borrow_and_update().clone();
            let wanted: HashMap<usize, &Arc<Upstream>> = current
                .iter()
                .filter(|u| u.background.is_some())
                .map(|u| (identity(u), u))
                .collect();
            running.retain(|id, (up, task)| {
                let keep = wanted.contains_key(id);
                if !keep {
                    log::debug!("upstream {}: health checks stopped", up.name);
                    task.abort();
                }
                keep
            });
            for (id, up) in wanted {
                if running.contains_key(&id) {
                    continue;
                }
                let Some(bg) = up.background.clone() else {
                    continue;
                };
                let watch = shutdown.clone();
                let task = tokio::spawn(async move { bg.start(watch).await });
                running.insert(id, (up.clone(), task));
            }
            tokio::select! {
                changed = live.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        for (_, (_, task)) in running {
            task.abort();
        }
    }
}
