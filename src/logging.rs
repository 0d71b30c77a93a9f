//! The process logger: `env_logger` (level from `RUST_LOG`, default `info`), with a few of our
//! dependencies' routine start-up messages moved down to DEBUG, so that a clean start logs one
//! line per listener and nothing that looks like a problem.

use log::{Level, Log, Metadata, Record};
use std::borrow::Cow;

/// Messages (target, message prefix) shown at DEBUG instead of their own INFO or WARN level.
/// Only these exact messages move: anything else those modules log keeps its level.
const DEMOTED: &[(&str, &str)] = &[
    // Logged on the first use of the cache's header codec, i.e. at every start with a caching
    // route. A zstd dictionary only shrinks headers kept compressed. `cache::IndexedStorage`
    // keeps them parsed, so the only compressed header it keeps is one empty template. Hits
    // decode that template, and each insert encodes once to copy the header. A dictionary would
    // save nothing and would be a trained file to ship and load, so not having one is the
    // intended set-up, and the warning is not a problem.
    (
        "pingora_cache::meta",
        "no header compression dictionary loaded",
    ),
    // Pingora reports its own start one step at a time, internal services (`BG sigusr1`, ...)
    // included. The gateway logs each listener it binds, which is what an operator needs.
    // Shutdown, upgrade and daemonizing messages keep their INFO level.
    (
        "pingora_core::server::bootstrap_services",
        "Bootstrap starting",
    ),
    ("pingora_core::server::bootstrap_services", "Bootstrap done"),
    ("pingora_core::server", "Server starting"),
    (
        "pingora_core::server",
        "Starting services in dependency order",
    ),
    ("pingora_core::server", "Starting service: "),
];

/// Installs the logger (once per process; later calls do nothing).
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let inner = env_logger::Builder::from_env(env).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Demoting(inner))).is_ok() {
        log::set_max_level(max);
    }
}

/// Whether `record` is one of the [`DEMOTED`] messages.
fn is_demoted(record: &Record<'_>) -> bool {
    if !matches!(record.level(), Level::Warn | Level::Info) {
        return false;
    }
    let target = record.target();
    if !DEMOTED.iter().any(|(t, _)| *t == target) {
        return false;
    }
    // Only these few targets get this far, so formatting a message that has arguments is rare.
    let args = record.args();
    let text = args
        .as_str()
        .map_or_else(|| Cow::Owned(args.to_string()), Cow::Borrowed);
    DEMOTED
        .iter()
        .any(|(t, prefix)| *t == target && text.starts_with(prefix))
}

struct Demoting(env_logger::Logger);

impl Log for Demoting {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        if !is_demoted(record) {
            self.0.log(record);
            return;
        }
        let debug = Record::builder()
            .args(*record.args())
            .level(Level::Debug)
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .build();
        // The inner logger applies the filter again, so these show only where DEBUG is on.
        self.0.log(&debug);
    }

    fn flush(&self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demoted(target: &str, level: Level, args: std::fmt::Arguments<'_>) -> bool {
        is_demoted(
            &Record::builder()
                .args(args)
                .level(level)
                .target(target)
                .build(),
        )
    }

    #[test]
    fn only_the_listed_messages_move() {
        assert!(demoted(
            "pingora_cache::meta",
            Level::Warn,
            format_args!(
                "no header compression dictionary loaded - use set_compression_dict_content()"
            )
        ));
        let name = "BG sigusr1";
        assert!(demoted(
            "pingora_core::server",
            Level::Info,
            format_args!("Starting service: {name}")
        ));
        assert!(demoted(
            "pingora_core::server::bootstrap_services",
            Level::Info,
            format_args!("Bootstrap done")
        ));
        // Same module, other messages: kept.
        assert!(!demoted(
            "pingora_cache::meta",
            Level::Warn,
            format_args!("failed to read header compress dictionary file at {}", "/x")
        ));
        assert!(!demoted(
            "pingora_core::server",
            Level::Info,
            format_args!("SIGTERM received, gracefully exiting")
        ));
        // Same text from another target: kept.
        assert!(!demoted(
            "avx_gateway::server",
            Level::Info,
            format_args!("Server starting")
        ));
        // Errors are never moved.
        assert!(!demoted(
            "pingora_core::server",
            Level::Error,
            format_args!("Starting service: {name}")
        ));
    }
}
