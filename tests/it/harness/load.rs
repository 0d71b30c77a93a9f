//! Continuous keep-alive load against the gateway, counting every failed or unanswered
//! request (upgrade and reload tests), and a guard for processes that are not our children.

use super::client;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::task::JoinHandle;

/// Kills a process that is not our child (one the upgrade script started) on drop.
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .status();
    }
}

/// Whether a process (not necessarily our child) is running and not a zombie.
pub fn pid_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Counters of a [`Load`] run.
#[derive(Default)]
pub struct LoadStats {
    /// 200 with the expected body.
    pub ok: AtomicUsize,
    /// Answered, but not 200 or not the expected body.
    pub failed: AtomicUsize,
    /// No answer: connect, reset, closed before the response, body errors.
    pub errors: AtomicUsize,
    /// The first few failures and errors, with the time they happened.
    pub samples: Mutex<Vec<String>>,
}

impl LoadStats {
    fn sample(&self, started: Instant, what: String) {
        let mut s = self.samples.lock().expect("samples lock");
        if s.len() < 20 {
            s.push(format!("{:?}: {what}", started.elapsed()));
        }
    }

    /// Asserts a run without a single failed or unanswered request, and more than `min_ok`
    /// good ones.
    pub fn assert_clean(&self, min_ok: usize) {
        assert_eq!(self.errors.load(Ordering::SeqCst), 0, "{}", self.summary());
        assert_eq!(self.failed.load(Ordering::SeqCst), 0, "{}", self.summary());
        let ok = self.ok.load(Ordering::SeqCst);
        assert!(ok > min_ok, "too few requests: {}", self.summary());
    }

    /// Counts and the first failures, for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "ok={} failed={} errors={} samples={:#?}",
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            self.errors.load(Ordering::SeqCst),
            self.samples.lock().expect("samples lock")
        )
    }
}

/// Continuous keep-alive load: `clients` reqwest clients (one pooled connection each), each
/// sending GET requests back to back until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// The counters so far.
    pub stats: Arc<LoadStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` loops against `base` (`http://ADDR`), requesting `/api/load?...`.
    pub fn start(base: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let started = Instant::now();
        let tasks = (0..clients)
            .map(|c| {
                let (stop, stats, base) = (stop.clone(), stats.clone(), base.clone());
                tokio::spawn(async move {
                    let http = client();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let uri = format!("/api/load?c={c}&n={n}");
                        match http.get(format!("{base}{uri}")).send().await {
                            Ok(resp) => {
                                let status = resp.status();
                                match resp.text().await {
                                    Ok(body) if status == 200 && body.contains(&uri) => {
                                        stats.ok.fetch_add(1, Ordering::SeqCst);
                                    }
                                    Ok(body) => {
                                        stats.failed.fetch_add(1, Ordering::SeqCst);
                                        stats.sample(started, format!("{uri}: {status} {body}"));
                                    }
                                    Err(e) => {
                                        stats.errors.fetch_add(1, Ordering::SeqCst);
                                        stats.sample(started, format!("{uri}: body: {e:?}"));
                                    }
                                }
                            }
                            Err(e) => {
                                stats.errors.fetch_add(1, Ordering::SeqCst);
                                stats.sample(started, format!("{uri}: {e:?}"));
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, stats, tasks }
    }

    /// Good answers so far.
    pub fn ok(&self) -> usize {
        self.stats.ok.load(Ordering::SeqCst)
    }

    /// Stops the loops and returns the counters.
    pub async fn stop(self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task panicked");
        }
        self.stats
    }
}
