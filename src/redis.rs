//! The Redis client behind cluster-wide rate limits: a pool of multiplexed connections made
//! lazily inside Pingora's runtimes, a deadline on every command, and health counters.
//!
//! Building a [`RedisBackend`] only parses the `redis:` section: nothing connects, so
//! `avx-gateway -t` and start-up never wait for Redis, and a build on a thread without a
//! tokio runtime (start-up, a reload's blocking thread) is fine. The first command on each
//! pool slot spawns that slot's connect task on the runtime it runs on; the task retries
//! with backoff until it connects. From then on the connection reconnects by itself (the
//! `redis` crate's `ConnectionManager`, or the cluster connection's own topology refresh).
//! A command never waits longer than `timeout_ms`, connecting included.

use crate::config::RedisConfig;
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, RedisFuture, RedisResult, Value};
use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How long one connect attempt may take (TLS to a remote Redis takes far more than a
/// command's deadline); commands meanwhile fail fast on their own deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One connect attempt with the connection manager's own few retries.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff between connect attempts of one slot: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why a command got no answer, as counted in `avx_ratelimit_backend_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// No answer within `timeout_ms` (Redis slow, or still connecting).
    Timeout,
    /// Redis refused or failed the command, or the connection is down.
    Error,
}

/// A `redis:` section, compiled: the pool and its health, shared by every cluster limit.
pub struct RedisBackend {
    config: RedisConfig,
    target: Target,
    slots: Box<[Arc<Slot>]>,
    timeout: Duration,
    timeouts: AtomicU64,
    errors: AtomicU64,
    up: AtomicBool,
}

/// Where connections go: one server or a cluster.
#[derive(Clone)]
enum Target {
    Single(::redis::Client),
    Cluster(ClusterClient),
}

/// One pooled connection, of either kind; cloning it is cheap (both are handles to a task).
#[derive(Clone)]
pub enum Connection {
    /// A multiplexed connection to one server that reconnects by itself.
    Single(ConnectionManager),
    /// A cluster connection (routes each command by its key's slot).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// A pool slot: its connection once made, and who waits for it.
struct Slot {
    conn: OnceLock<Connection>,
    connecting: AtomicBool,
    ready: Notify,
}

impl RedisBackend {
    /// Compiles a validated `redis:` section; parses the URLs, connects nothing.
    pub fn new(cfg: &RedisConfig) -> Result<RedisBackend, String> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let target = match &cfg.url {
            Some(url) => Target::Single(
                ::redis::Client::open(url.0.as_str())
                    .map_err(|e| format!("invalid Redis URL {:?}: {e}", url.0))?,
            ),
            None => Target::Cluster(
                ClusterClientBuilder::new(cfg.urls.iter().map(|u| u.0.as_str()))
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(timeout)
                    .retries(0)
                    .build()
                    .map_err(|e| format!("invalid Redis cluster URLs: {e}"))?,
            ),
        };
        Ok(RedisBackend {
            config: cfg.clone(),
            target,
            slots: (0..cfg.pool_size.max(1))
                .map(|_| {
                    Arc::new(Slot {
                        conn: OnceLock::new(),
                        connecting: AtomicBool::new(false),
                        ready: Notify::new(),
                    })
                })
                .collect(),
            timeout,
            timeouts: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            up: AtomicBool::new(false),
        })
    }

    /// `prev` when it was built from the same section (its connections and counters are
    /// kept across a reload), else a new backend.
    pub fn reuse_or_new(
        prev: Option<&Arc<RedisBackend>>,
        cfg: &RedisConfig,
    ) -> Result<Arc<RedisBackend>, String> {
        match prev {
            Some(p) if p.config == *cfg => Ok(p.clone()),
            _ => RedisBackend::new(cfg).map(Arc::new),
        }
    }

    /// The section this backend was built from.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Runs `f` on a pooled connection within `timeout_ms` (waiting for the connection
    /// included) and counts the outcome. Must be called inside a tokio runtime.
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        // Round-robin per thread: a shared counter would be one more cache line that every
        // worker writes on every request.
        thread_local!(static NEXT: Cell<usize> = const { Cell::new(0) });
        let turn = NEXT.with(|n| {
            let v = n.get();
            n.set(v.wrapping_add(1));
            v
        });
        let slot = &self.slots[turn % self.slots.len()];
        let outcome = tokio::time::timeout(self.timeout, async {
            let conn = self.connection(slot).await;
            f(conn).await
        })
        .await;
        match outcome {
            Ok(Ok(v)) => {
                // Read first: the flag is written only when it changes.
                if !self.up.load(Ordering::Relaxed) && !self.up.swap(true, Ordering::Relaxed) {
                    log::info!("redis: commands succeed");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.down(format_args!("{e}"));
                Err(BackendError::Error)
            }
            Err(_) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                self.down(format_args!("no answer within {:?}", self.timeout));
                Err(BackendError::Timeout)
            }
        }
    }

    /// Marks the backend down, logging only the transition so a flood logs one line.
    fn down(&self, why: std::fmt::Arguments<'_>) {
        if self.up.load(Ordering::Relaxed) && self.up.swap(false, Ordering::Relaxed) {
            log::warn!("redis: command failed ({why}); cluster rate limits apply failure_mode");
        }
    }

    /// The slot's connection, waiting (under the caller's deadline) for its connect task.
    async fn connection(&self, slot: &Arc<Slot>) -> Connection {
        loop {
            let ready = slot.ready.notified();
            tokio::pin!(ready);
            // Registered before the check, so a connect finishing in between still wakes us.
            ready.as_mut().enable();
            if let Some(c) = slot.conn.get() {
                return c.clone();
            }
            if !slot.connecting.swap(true, Ordering::AcqRel) {
                spawn_connect(Arc::downgrade(slot), self.target.clone(), self.timeout);
            }
            ready.await;
        }
    }

    /// Whether the last command succeeded (`avx_ratelimit_backend_up`).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Commands that got no answer within `timeout_ms`.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Commands that failed otherwise (refused, connection down, Redis error).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Connects one slot in the background, retrying with backoff until it succeeds or the slot
/// is dropped (its backend replaced by a reload).
fn spawn_connect(slot: Weak<Slot>, target: Target, timeout: Duration) {
    tokio::spawn(async move {
        let mut delay = BACKOFF_FIRST;
        let mut failures = 0u32;
        loop {
            // The manager retries a few times itself; this bounds the whole attempt.
            let made = tokio::time::timeout(ATTEMPT_TIMEOUT, connect(&target, timeout)).await;
            let Some(s) = slot.upgrade() else { return };
            match made {
                Ok(Ok(conn)) => {
                    let _ = s.conn.set(conn);
                    s.ready.notify_waiters();
                    if failures > 0 {
                        log::info!("redis: connected after {failures} failed attempts");
                    }
                    return;
                }
                Ok(Err(e)) if failures == 0 => log::warn!("redis: cannot connect: {e}"),
                Err(_) if failures == 0 => {
                    log::warn!("redis: cannot connect within {ATTEMPT_TIMEOUT:?}")
                }
                _ => {}
            }
            failures += 1;
            drop(s);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(BACKOFF_MAX);
        }
    });
}

async fn connect(target: &Target, timeout: Duration) -> RedisResult<Connection> {
    match target {
        Target::Single(client) => {
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(timeout)
                // Its reconnects after a drop: quick first, capped, so Redis coming back is
                // picked up within a second or so.
                .set_factor(50)
                .set_max_delay(1_000)
                .set_number_of_retries(3);
            ConnectionManager::new_with_config(client.clone(), cfg)
                .await
                .map(Connection::Single)
        }
        Target::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
    }
}
