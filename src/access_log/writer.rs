//! The access log's writer thread: drains the channel into a buffer, writes it out at most
//! every [`FLUSH_INTERVAL`] (or when the buffer fills), and reopens the file when asked.
//!
//! It is a plain OS thread rather than a task, so a slow disk blocks only this thread and
//! never a proxy worker.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a line waits in the buffer before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Pause between two drains of the queue (see [`Writer::run`]). At most `QUEUE_LINES` lines
/// arrive meanwhile without drops: 16,384 per 20 ms is 800k lines a second.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// Buffer size that triggers a write before the interval is up.
const BUFFER_BYTES: usize = 64 * 1024;

/// Where lines go.
#[derive(Debug, Clone)]
pub enum Target {
    /// The process's standard output.
    Stdout,
    /// A file, appended to and reopened on request (log rotation).
    File(PathBuf),
}

impl Target {
    /// Opens the target for appending.
    pub fn open(&self) -> io::Result<Box<dyn Write + Send>> {
        Ok(match self {
            Target::Stdout => Box::new(io::stdout()),
            Target::File(path) => Box::new(append(path)?),
        })
    }
}

fn append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Flags the rest of the process sets for the writer.
#[derive(Debug, Default)]
pub struct Control {
    /// Reopen the file before the next write (set on SIGUSR1).
    pub reopen: AtomicBool,
    /// Write out what is queued and exit.
    pub stop: AtomicBool,
}

/// The writer's state, built at start-up and moved onto its thread.
pub struct Writer {
    rx: Receiver<String>,
    target: Target,
    sink: Box<dyn Write + Send>,
    control: Arc<Control>,
    buf: Vec<u8>,
    failing: bool,
}

impl Writer {
    /// A writer draining `rx` into `sink`, which was opened from `target`.
    pub fn new(
        rx: Receiver<String>,
        target: Target,
        sink: Box<dyn Write + Send>,
        control: Arc<Control>,
    ) -> Writer {
        Writer {
            rx,
            target,
            sink,
            control,
            buf: Vec::with_capacity(BUFFER_BYTES),
            failing: false,
        }
    }

    /// Runs until stopped (or every sender is gone), then writes out what is left.
    ///
    /// The writer sleeps between drains instead of blocking on the channel: a sender only
    /// has to wake a receiver that is parked in `recv`, and that wake-up (a futex call and a
    /// context switch for every request) cost more CPU than the rest of the logging.
    pub fn run(mut self) {
        let mut deadline: Option<Instant> = None;
        loop {
            // Before draining: a line logged after the rotation belongs in the new file.
            if self.control.reopen.swap(false, Ordering::AcqRel) {
                self.flush();
                deadline = None;
                self.reopen();
            }
            let connected = loop {
                match self.rx.try_recv() {
                    Ok(line) => {
                        self.push(&line);
                        deadline.get_or_insert_with(|| Instant::now() + FLUSH_INTERVAL);
                    }
                    Err(TryRecvError::Empty) => break true,
                    Err(TryRecvError::Disconnected) => break false,
                }
            };
            if !connected || self.control.stop.load(Ordering::Acquire) {
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.flush();
                deadline = None;
            }
            std::thread::sleep(DRAIN_INTERVAL);
        }
        while let Ok(line) = self.rx.try_recv() {
            self.push(&line);
        }
        self.flush();
    }

    fn push(&mut self, line: &str) {
        if self.buf.len() + line.len() > BUFFER_BYTES {
            self.flush();
        }
        self.buf.extend_from_slice(line.as_bytes());
    }

    /// Writes the buffer out. On failure the buffered lines are dropped rather than kept
    /// growing, and the error is logged once until writing works again.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = self
            .sink
            .write_all(&self.buf)
            .and_then(|()| self.sink.flush());
        self.buf.clear();
        match result {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                log::error!("access log: write failed, dropping lines: {e}");
            }
            Err(_) => {}
        }
    }

    fn reopen(&mut self) {
        let Target::File(path) = &self.target else {
            return;
        };
        match append(path) {
            Ok(f) => {
                self.sink = Box::new(f);
                self.failing = false;
                log::info!("access log: reopened {}", path.display());
            }
            Err(e) => log::error!(
                "access log: cannot reopen {}, keeping the old file: {e}",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;

    #[test]
    fn writes_buffered_lines_then_reopens_and_stops() {
        let dir = std::env::temp_dir().join(format!("avx-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let target = Target::File(path.clone());
        let control = Arc::new(Control::default());
        let (tx, rx) = sync_channel(16);
        let writer = Writer::new(rx, target.clone(), target.open().unwrap(), control.clone());
        let thread = std::thread::spawn(move || writer.run());
        tx.send("one\n".into()).unwrap();
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let until = Instant::now() + Duration::from_secs(5);
        while read(&path) != "one\n" && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read(&path), "one\n");
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        control.reopen.store(true, Ordering::Release);
        tx.send("two\n".into()).unwrap();
        control.stop.store(true, Ordering::Release);
        thread.join().unwrap();
        assert_eq!(read(&rotated), "one\n");
        assert_eq!(read(&path), "two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
