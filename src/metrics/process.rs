//! Process metrics (RSS, CPU seconds, open fds) and the `avx_build_info` gauge.

use prometheus::{IntGaugeVec, Opts, Registry};

/// Registers `avx_build_info{version, git_hash} 1`.
pub(super) fn register_build_info(registry: &Registry) -> prometheus::Result<()> {
    let info = IntGaugeVec::new(
        Opts::new(
            "avx_build_info",
            "Always 1; the labels carry the gateway's version and git revision.",
        ),
        &["version", "git_hash"],
    )?;
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), env!("AVX_GIT_HASH")])
        .set(1);
    registry.register(Box::new(info))
}

/// Registers the `process_*` series of the running process (Linux only).
pub(super) fn register_process(registry: &Registry) -> prometheus::Result<()> {
    #[cfg(target_os = "linux")]
    registry.register(Box::new(linux::SelfProcess::new()))?;
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
    Ok(())
}

#[cfg(target_os = "linux")]
mod linux {
    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::MetricFamily;
    use std::sync::OnceLock;

    /// The crate's `ProcessCollector`, following the process across Pingora's daemonizing fork.
    ///
    /// `ProcessCollector` reads `/proc/<pid>` for a pid fixed at construction. The metrics are
    /// built before `run()` forks into the background, so the child would keep reading its
    /// exited parent; this re-targets the collector once when the pid has changed.
    pub(super) struct SelfProcess {
        pid: u32,
        started: ProcessCollector,
        forked: OnceLock<ProcessCollector>,
    }

    impl SelfProcess {
        pub(super) fn new() -> SelfProcess {
            let pid = std::process::id();
            SelfProcess {
                pid,
                started: collector_for(pid),
                forked: OnceLock::new(),
            }
        }
    }

    fn collector_for(pid: u32) -> ProcessCollector {
        ProcessCollector::new(i32::try_from(pid).unwrap_or(0), "")
    }

    impl Collector for SelfProcess {
        fn desc(&self) -> Vec<&Desc> {
            self.started.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let pid = std::process::id();
            if pid == self.pid {
                self.started.collect()
            } else {
                self.forked.get_or_init(|| collector_for(pid)).collect()
            }
        }
    }
}
