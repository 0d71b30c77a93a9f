//! In-process config reload: the live runtime behind an atomic pointer, and the reloader
//! that reads, validates and compiles a new one and swaps it in.
//!
//! Each request takes the runtime live when it starts ([`LiveRuntime::load`]) and finishes on
//! it, so a swap never changes a request midway; connections are never touched, and the next
//! request of a kept-alive connection sees the new routes.

mod client;
mod fixed;
mod trigger;

pub use client::request_reload;
pub use fixed::tls_digests;
pub use trigger::{FileWatcher, SighupReload};

use crate::config::{Config, ConfigError};
use crate::metrics::ReloadResult;
use crate::plugin::Registry;
use crate::runtime::Runtime;
use crate::upstream::UpstreamSet;
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The runtime new requests use, and what `/status` says about it.
pub struct LiveRuntime {
    current: ArcSwap<Runtime>,
    upstreams: watch::Sender<UpstreamSet>,
    status: Mutex<ConfigStatus>,
    /// Whether the proxy was started with Pingora's compression module.
    compression_module: bool,
}

/// Which config is live, and how the last reload went.
#[derive(Debug, Clone)]
pub struct ConfigStatus {
    /// 1 for the config loaded at start, +1 per successful reload.
    pub generation: u64,
    /// When the live config was loaded.
    pub loaded_at: SystemTime,
    /// SHA-256 of the live config file's bytes (hex), empty when built without a file.
    pub hash: String,
    /// The error of the last reload attempt, when it failed; cleared by a successful one.
    pub last_error: Option<String>,
}

impl LiveRuntime {
    /// Makes `runtime` live (generation 1).
    pub fn new(runtime: Arc<Runtime>, hash: String) -> Arc<LiveRuntime> {
        let status = ConfigStatus {
            generation: 1,
            loaded_at: SystemTime::now(),
            hash,
            last_error: None,
        };
        runtime
            .metrics
            .hub()
            .set_config(1, unix_seconds(status.loaded_at));
        let (upstreams, _) = watch::channel(UpstreamSet::from(&runtime.upstreams[..]));
        Arc::new(LiveRuntime {
            compression_module: runtime.any_compression,
            current: ArcSwap::new(runtime),
            upstreams,
            status: Mutex::new(status),
        })
    }

    /// The live runtime; a request holds it from start to end.
    pub fn load(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Follows the live runtime's upstream set (for their background loops).
    pub fn upstreams(&self) -> watch::Receiver<UpstreamSet> {
        self.upstreams.subscribe()
    }

    /// Which config is live.
    pub fn status(&self) -> ConfigStatus {
        lock(&self.status).clone()
    }

    /// Whether the proxy services were started with Pingora's compression module.
    pub fn compression_module(&self) -> bool {
        self.compression_module
    }

    fn swap(&self, runtime: Arc<Runtime>, hash: String) -> u64 {
        let mut status = lock(&self.status);
        status.generation += 1;
        status.loaded_at = SystemTime::now();
        status.hash = hash;
        status.last_error = None;
        runtime
            .metrics
            .hub()
            .set_config(status.generation, unix_seconds(status.loaded_at));
        self.upstreams
            .send_replace(UpstreamSet::from(&runtime.upstreams[..]));
        self.current.store(runtime);
        status.generation
    }

    fn failed(&self, message: &str) {
        lock(&self.status).last_error = Some(message.to_string());
    }
}

fn lock(m: &Mutex<ConfigStatus>) -> MutexGuard<'_, ConfigStatus> {
    // The status is plain data; a panic while it was held leaves nothing half-written.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Why a reload changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    /// The file does not read, parse, validate or compile (file:line:key in the message).
    Invalid(String),
    /// The change needs a binary upgrade; the message names the key.
    Refused(String),
    /// This gateway was built without a config file.
    Unavailable,
}

impl ReloadError {
    /// The message for logs, `/status` and `POST /reload`.
    pub fn message(&self) -> &str {
        match self {
            ReloadError::Invalid(m) | ReloadError::Refused(m) => m,
            ReloadError::Unavailable => "this gateway was not built from a config file",
        }
    }

    fn result(&self) -> ReloadResult {
        match self {
            ReloadError::Refused(_) => ReloadResult::Refused,
            _ => ReloadResult::Error,
        }
    }
}

/// A reload that went live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// SHA-256 of the file now live.
    pub hash: String,
}

/// Reads, checks and swaps in the config file; one reload at a time.
pub struct Reloader {
    live: Arc<LiveRuntime>,
    path: Option<String>,
    registry: Registry,
    idle_timeout_override: Option<Duration>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader of `path` (None: built without a file) into `live`.
    pub fn new(
        live: Arc<LiveRuntime>,
        path: Option<String>,
        registry: Registry,
        idle_timeout_override: Option<Duration>,
    ) -> Arc<Reloader> {
        Arc::new(Reloader {
            live,
            path,
            registry,
            idle_timeout_override,
            one_at_a_time: tokio::sync::Mutex::new(()),
        })
    }

    /// The runtime being reloaded.
    pub fn live(&self) -> &Arc<LiveRuntime> {
        &self.live
    }

    /// Reloads the file: on success the new runtime is live; on failure nothing changed and
    /// the error is logged, counted and kept for `/status`. `trigger` is for the log.
    pub async fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let previous = self.live.load();
        let outcome = match self.path.clone() {
            None => Err(ReloadError::Unavailable),
            Some(path) => {
                let registry = self.registry.clone();
                let idle = self.idle_timeout_override;
                let module = self.live.compression_module;
                let prev = previous.clone();
                // Compiling reads key files and hashes passwords: off the event loop.
                tokio::task::spawn_blocking(move || compile(&path, &registry, idle, &prev, module))
                    .await
                    .unwrap_or_else(|e| Err(ReloadError::Invalid(format!("reload aborted: {e}"))))
            }
        };
        let hub = previous.metrics.hub().clone();
        match outcome {
            Ok((runtime, hash)) => {
                let runtime = Arc::new(runtime);
                // A new access log (its section changed) starts its writer now; a kept one
                // is already running.
                if let Some(Err(e)) = runtime.access_log.as_ref().map(|l| l.start()) {
                    let err = ReloadError::Invalid(format!("access_log: cannot start: {e}"));
                    return Err(self.fail(trigger, err, &hub));
                }
                runtime.go_live();
                let generation = self.live.swap(runtime, hash.clone());
                hub.record_reload(ReloadResult::Ok);
                log::info!("config reloaded ({trigger}): generation {generation}, sha256 {hash}");
                Ok(Reloaded { generation, hash })
            }
            Err(e) => Err(self.fail(trigger, e, &hub)),
        }
    }

    fn fail(&self, trigger: &str, e: ReloadError, hub: &crate::metrics::MetricsHub) -> ReloadError {
        hub.record_reload(e.result());
        log::error!(
            "config reload ({trigger}) failed, the old config keeps serving: {}",
            e.message()
        );
        self.live.failed(e.message());
        e
    }
}

/// Reads and compiles the file against the live runtime.
fn compile(
    path: &str,
    registry: &Registry,
    idle: Option<Duration>,
    previous: &Runtime,
    compression_module: bool,
) -> Result<(Runtime, String), ReloadError> {
    let source = Config::read_source(path).map_err(|e| ReloadError::Invalid(e.to_string()))?;
    let located = |e: ConfigError| e.in_file(path, &source).to_string();
    let config = Config::from_yaml_str(&source).map_err(|e| ReloadError::Invalid(located(e)))?;
    config
        .validate()
        .map_err(|e| ReloadError::Invalid(located(e)))?;
    // Every refusal is decided before compiling, so a refused reload opens, resolves and
    // registers nothing.
    let refused = |e: ConfigError| ReloadError::Refused(located(e));
    let compressing = if compression_module {
        None
    } else {
        fixed::first_compressing_route(&config)
    };
    fixed::check(previous.config(), &config, compressing).map_err(refused)?;
    fixed::check_tls(previous.tls_digests(), &config).map_err(refused)?;
    let runtime = Runtime::rebuild(&config, registry, idle, previous)
        .map_err(|e| ReloadError::Invalid(located(e)))?;
    Ok((runtime, sha256_hex(source.as_bytes())))
}

/// Hex SHA-256 of the config file: tells operators which file is live.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
