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

/// A loop is kept across a reload as the same `Arc` (a kept upstream, or a kept health
/// registry's probe loop in a rebuilt one), so its address is the identity of a running loop.
fn identity(bg: &Arc<dyn BackgroundService + Send + Sync>) -> usize {
    Arc::as_ptr(bg) as *const () as usize
}

/// A started loop.
struct Running {
    upstream: Arc<str>,
    _service: Arc<dyn BackgroundService + Send + Sync>,
    task: JoinHandle<()>,
}

#[async_trait]
impl BackgroundService for Supervisor {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut live = self.live.clone();
        // A loop's upstream by name only: holding the upstream would keep its backend view
        // registered with a kept health registry, which would then probe servers a reload
        // removed. The loop itself is held, so its address (the key) is not reused while the
        // entry exists, even if the loop ended on its own.
        let mut running: HashMap<usize, Running> = HashMap::new();
        loop {
            let current = live.borrow_and_update().clone();
            let wanted: HashMap<usize, (&Arc<Upstream>, &Arc<_>)> = current
                .iter()
                .flat_map(|u| u.background.iter().map(move |bg| (identity(bg), (u, bg))))
                .collect();
            running.retain(|id, run| {
                let keep = wanted.contains_key(id);
                if !keep {
                    log::debug!("upstream {}: a background loop stopped", run.upstream);
                    run.task.abort();
                }
                keep
            });
            for (id, (up, bg)) in wanted {
                if running.contains_key(&id) {
                    continue;
                }
                let watch = shutdown.clone();
                let started = bg.clone();
                let task = tokio::spawn(async move { started.start(watch).await });
                let run = Running {
                    upstream: up.name.clone(),
                    _service: bg.clone(),
                    task,
                };
                running.insert(id, run);
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
        for (_, run) in running {
            run.task.abort();
        }
    }
}
