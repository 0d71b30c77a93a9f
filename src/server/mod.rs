//! Bootstrap: turns a validated [`Config`] into a running Pingora server.
//!
//! [`Gateway::builder`] compiles the runtime model; [`Gateway::into_server`] adds the proxy
//! listeners, the admin listener and the health-check services to a Pingora [`Server`] built
//! with `Server::new_with_opt_and_conf`, so `-u` upgrades and `-d` daemonizing work.

mod builder;
mod drain;
mod listeners;

pub use drain::draining;

pub use builder::GatewayBuilder;

use crate::config::{Config, ConfigError};
use crate::plugin::Registry;
use crate::reload::{LiveRuntime, Reloader};
use crate::runtime::Runtime;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use std::sync::Arc;

/// A built gateway: the validated config, the compiled runtime and what reloading needs.
pub struct Gateway {
    config: Config,
    runtime: Arc<Runtime>,
    pool_size: usize,
    source: Option<ConfigSource>,
    registry: Registry,
    idle_timeout: Option<std::time::Duration>,
}

/// The file a gateway was loaded from, read again on reload.
struct ConfigSource {
    path: String,
    sha256: String,
}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Loads, validates and builds from a YAML file; every error names the file, line and key.
    pub fn from_file(path: &str) -> Result<Gateway, ConfigError> {
        Gateway::builder().build_from_file(path)
    }

    /// The configuration this gateway was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The compiled runtime model (routes, upstreams).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The Pingora server settings derived from `server:`.
    pub fn server_conf(&self) -> ServerConf {
        let s = &self.config.server;
        let mut conf = ServerConf {
            threads: s.workers,
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            grace_period_seconds: Some(s.grace_period_seconds),
            graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
            daemon: s.daemon,
            error_log: s.error_log.clone(),
            user: s.user.clone(),
            group: s.group.clone(),
            work_stealing: s.work_stealing,
            listener_tasks_per_fd: s.listener_tasks_per_fd,
            upstream_keepalive_pool_size: self.pool_size,
            // A daemon would otherwise move to `/`, and a reload would then read relative
            // paths of the config (key files, htpasswd, JWKS files) from there.
            working_directory: std::env::current_dir().ok(),
            ..ServerConf::default()
        };
        conf.version = 1;
        conf
    }

    /// Builds the Pingora server with every service added, bootstrapped (fds taken over on `-u`).
    pub fn into_server(self, opt: Opt) -> pingora_error::Result<Server> {
        self.assemble(opt).map(|(server, _)| server)
    }

    fn assemble(self, opt: Opt) -> pingora_error::Result<(Server, Arc<LiveRuntime>)> {
        // Pingora retries a busy port for 30 s and then panics inside the service while the
        // process lives on; checking first turns that into a clear start-up error. On an
        // upgrade the sockets come from the old process instead.
        if !opt.upgrade {
            listeners::check_bindable(&self.config)?;
        }
        let mut server = Server::new_with_opt_and_conf(opt, self.server_conf());
        // Subscribed before bootstrap and daemonizing so no phase change is missed.
        let drain = drain::DrainWatch::new(server.watch_execution_phase());
        server.bootstrap();
        let conf = server.configuration.clone();
        let (path, hash) = match self.source {
            Some(s) => (Some(s.path), s.sha256),
            None => (None, String::new()),
        };
        let live = LiveRuntime::new(self.runtime.clone(), hash);
        let reloader = Reloader::new(live.clone(), path.clone(), self.registry, self.idle_timeout);
        for svc in listeners::proxy_services(&conf, &self.config, &live)? {
            server.add_boxed_service(svc);
        }
        if let Some(admin) = &self.config.admin {
            server.add_boxed_service(crate::admin::service(admin, &reloader));
        }
        server.add_service(background_service("upgrade drain", drain));
        server.add_service(one_thread(
            "upstream health",
            crate::upstream::Supervisor::new(live.upstreams()),
        ));
        server.add_service(one_thread(
            "reload on SIGHUP",
            crate::reload::SighupReload(reloader.clone()),
        ));
        if let (true, Some(path)) = (self.config.server.watch_config, &path) {
            let debounce = std::time::Duration::from_millis(self.config.server.watch_debounce_ms);
            server.add_service(one_thread(
                "watch config",
                crate::reload::FileWatcher::new(reloader.clone(), path, debounce),
            ));
        }
        if let Some(tracer) = &self.runtime.tracing {
            server.add_boxed_service(tracer.service());
        }
        let current = live.clone();
        server.add_boxed_service(crate::access_log::service(Box::new(move || {
            current.load().access_log.clone()
        })));
        Ok((server, live))
    }

    /// Runs until a shutdown signal, then returns (daemonizes first when configured).
    pub fn run(self, opt: Opt) -> pingora_error::Result<()> {
        let (server, live) = self.assemble(opt)?;
        server.run(RunArgs::default());
        // Every runtime has stopped, so no more lines come: write out what is queued.
        if let Some(log) = &live.load().access_log {
            log.shutdown(std::time::Duration::from_secs(2));
        }
        Ok(())
    }
}

/// A small background service: one thread is plenty for a signal, a watch or a few timers.
fn one_thread<S>(name: &str, task: S) -> pingora_core::services::background::GenBackgroundService<S>
where
    S: pingora_core::services::background::BackgroundService + Send + Sync + 'static,
{
    let mut svc = background_service(name, task);
    svc.threads = Some(1);
    svc
}
