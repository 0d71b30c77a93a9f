//! What starts a reload besides `POST /reload`: SIGHUP, and (with `server.watch_config`)
//! a change of the config file.

use super::Reloader;
use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// Reloads on SIGHUP (a Pingora background service, so it runs after `-d` has forked).
pub struct SighupReload(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for SighupReload {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Registering replaces SIGHUP's default action, which would terminate the process.
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot handle SIGHUP, reload only through POST /reload: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    // The outcome is logged, counted and shown on /status by the reloader.
                    let _ = self.0.reload("SIGHUP").await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Reloads when the config file changes (`server.watch_config`), once writes have been quiet
/// for the debounce, and only when its bytes differ from the live file's.
pub struct FileWatcher {
    reloader: Arc<Reloader>,
    path: PathBuf,
    debounce: Duration,
    /// The bytes of the last file that failed to reload: events about other files in the
    /// directory must not retry it (and count a new failure) until it is edited again.
    failed: std::sync::Mutex<String>,
}

impl FileWatcher {
    /// A watcher of `path`.
    pub fn new(reloader: Arc<Reloader>, path: &str, debounce: Duration) -> FileWatcher {
        FileWatcher {
            reloader,
            path: PathBuf::from(path),
            debounce,
            failed: std::sync::Mutex::new(String::new()),
        }
    }
}

#[async_trait]
impl BackgroundService for FileWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The directory, not the file: editors and Kubernetes replace the file by a rename,
        // which a watch on the old inode would never report.
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                log::error!("watch_config: cannot watch {}: {e}", dir.display());
                return;
            }
        };
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            log::error!("watch_config: cannot watch {}: {e}", dir.display());
            return;
        }
        log::info!(
            "watch_config: reloading on changes to {}",
            self.path.display()
        );
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            // Let a burst of writes settle: an editor's save is several events.
            loop {
                match tokio::time::timeout(self.debounce, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if let Some(hash) = self.changed() {
                if self.reloader.reload("file change").await.is_err() {
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = hash;
                }
            }
        }
    }
}

impl FileWatcher {
    /// The file's hash when its bytes differ from the live config's and from the last file
    /// that failed (events in the directory are also about other files).
    fn changed(&self) -> Option<String> {
        // A config file is small; a blocking read on this one-thread service is fine.
        // Mid-rename or deleted: a later event will tell.
        let bytes = std::fs::read(&self.path).ok()?;
        let hash = super::sha256_hex(&bytes);
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (hash != self.reloader.live().status().hash && hash != failed).then_some(hash)
    }
}
