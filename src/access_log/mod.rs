//! Access logs: one line per request, rendered on the worker and written by a dedicated thread.
//!
//! The worker renders the line into a small `String` and hands it to the writer over a bounded
//! channel with `try_send`: when the writer falls behind (a stalled disk), the line is dropped
//! and counted in `avx_access_log_dropped_total` instead of blocking the worker. The writer
//! thread ([`writer`]) batches lines and writes them at most every 100 ms; it is started by a
//! Pingora background service ([`service`]) so that it runs in the process that serves traffic,
//! after `-d` has forked. The same service reopens the file on SIGUSR1 for logrotate.

mod format;
mod service;
mod writer;

pub use format::LogEntry;
pub use service::{build as service, CurrentLog};

use crate::config::{AccessLogConfig, AccessLogFormat};
use prometheus::IntCounter;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use writer::{Control, Target, Writer};

/// Lines that may wait for the writer before new ones are dropped (a few MiB at most).
const QUEUE_LINES: usize = 16 * 1024;

/// Initial capacity of a rendered line; typical lines fit without growing.
const LINE_CAPACITY: usize = 512;

/// An enabled access log: the sending side, plus the writer until it is started.
pub struct AccessLog {
    format: AccessLogFormat,
    tx: SyncSender<String>,
    dropped: IntCounter,
    control: Arc<Control>,
    /// The writer, built (and its file opened) at start-up, until its thread is started.
    pending: Mutex<Option<Writer>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the log's file now, so that a bad path fails start-up (and `-t`) with a clear
    /// error; lines are queued until [`start`](Self::start) runs the writer.
    pub fn open(cfg: &AccessLogConfig, dropped: IntCounter) -> io::Result<AccessLog> {
        let target = match cfg.path.as_str() {
            "stdout" => Target::Stdout,
            // Absolute, because daemonizing changes the working directory before any reopen.
            path => Target::File(std::path::absolute(path)?),
        };
        let sink = target.open()?;
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let control = Arc::new(Control::default());
        Ok(AccessLog {
            format: cfg.format,
            tx,
            dropped,
            pending: Mutex::new(Some(Writer::new(rx, target, sink, control.clone()))),
            control,
            thread: Mutex::new(None),
        })
    }

    /// Renders and queues one line; never blocks (a full queue drops the line and counts it).
    pub fn log(&self, entry: &LogEntry<'_>) {
        if self.tx.try_send(self.render(entry)).is_err() {
            self.dropped.inc();
        }
    }

    /// Renders one line as [`log`](Self::log) would, without queueing it (tests, benches).
    pub fn render(&self, entry: &LogEntry<'_>) -> String {
        let mut line = String::with_capacity(LINE_CAPACITY);
        match self.format {
            AccessLogFormat::Combined => format::combined(&mut line, entry),
            AccessLogFormat::Json => format::json(&mut line, entry),
        }
        line
    }

    /// Starts the writer thread; later calls do nothing.
    pub fn start(&self) -> io::Result<()> {
        let Some(writer) = lock(&self.pending).take() else {
            return Ok(());
        };
        let handle = std::thread::Builder::new()
            .name("avx-access-log".into())
            .spawn(move || writer.run())?;
        *lock(&self.thread) = Some(handle);
        Ok(())
    }

    /// Asks the writer to reopen its file before the next line (log rotation).
    pub fn reopen(&self) {
        self.control.reopen.store(true, Ordering::Release);
    }

    /// Writes out everything queued and stops the writer, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        self.control.stop.store(true, Ordering::Release);
        let Some(handle) = lock(&self.thread).take() else {
            return;
        };
        let end = Instant::now() + timeout;
        // The writer notices the flag within one flush interval; a disk that hangs longer
        // must not hold up the exit.
        while !handle.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            log::warn!("access log: writer still busy at exit; recent lines may be lost");
        }
    }
}

/// Locks a start-up/shutdown-only mutex, ignoring poisoning (the state stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
